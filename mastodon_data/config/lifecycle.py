"""Lifecycle: what protects the data (protectData), which droplet is the primary (primaryNode),
the one run that may upgrade a managed cluster's major version (postgresUpgradeTo), and the admin
keys kept in the hosts' authorized_keys (authorizedKeys)."""

from __future__ import annotations

from typing import Any

from mastodon_data.config.checks import Field, Validation, set_command
from mastodon_data.config.hosts import host_key_problem
from mastodon_data.config.project import PROJECT
from mastodon_data.config.records import LifecycleSettings
from mastodon_data.config.topology import POSTGRES_VERSIONS, REPLICA_COUNTS

UPGRADE_TARGETS = range(0, POSTGRES_VERSIONS.stop)  # 0: no upgrade in this run
FIELDS = (
    Field("protectData"),
    Field("primaryNode", example=1, allowed=REPLICA_COUNTS),
    Field("postgresUpgradeTo", example=POSTGRES_VERSIONS.stop - 1, allowed=UPGRADE_TARGETS),
    Field(
        "authorizedKeys",
        example="'ssh-ed25519 AAAA... admin@example'",
        check=host_key_problem,
        note="the line of the admin's ~/.ssh/id_ed25519.pub",
    ),
)


def parse_lifecycle(v: Validation, mode: str | None, topology: dict[str, Any]) -> LifecycleSettings:
    values = v.read(FIELDS)
    primary, upgrade = values["primaryNode"], values["postgresUpgradeTo"]
    if primary and mode in ("hosts", "managed"):
        v.bad(
            "primaryNode",
            primary,
            "only droplets mode names its primary by position (hosts mode: the first host is "
            "the primary; managed mode: DigitalOcean fails over on its own)",
            f"pulumi config rm {PROJECT}:primaryNode",
        )
    elif primary and topology["replica_count"] is not None and primary > topology["replica_count"]:
        v.bad(
            "primaryNode",
            primary,
            f"no droplet db-{primary}: replicaCount {topology['replica_count']} makes db-0 to "
            f"db-{topology['replica_count']}",
            set_command("primaryNode", 0),
        )
    check_upgrade(v, upgrade, mode, topology["postgres_version"])
    if values["authorizedKeys"] and mode == "managed":
        v.bad(
            "authorizedKeys",
            list(values["authorizedKeys"]),
            "managed mode runs no servers of its own",
            f"pulumi config rm {PROJECT}:authorizedKeys",
        )
    return LifecycleSettings(
        protect_data=values["protectData"] is not False,
        primary_node=primary or 0,
        postgres_upgrade_to=upgrade or 0,
        authorized_keys=tuple(" ".join(k.split()[:2]) for k in values["authorizedKeys"] or ()),
    )


def check_upgrade(v: Validation, upgrade: int | None, mode: str | None, version: Any) -> None:
    """A major upgrade is asked for one run, of a managed cluster, to postgresVersion."""
    if not upgrade:
        return
    if mode != "managed":
        v.bad(
            "postgresUpgradeTo",
            upgrade,
            "only a managed cluster is upgraded in place; hosts mode moves to new servers "
            "(upgradeFrom, docs/operators/major-upgrade.md)",
            f"pulumi config rm {PROJECT}:postgresUpgradeTo",
        )
    elif version is not None and upgrade != version:
        v.bad(
            "postgresUpgradeTo",
            upgrade,
            f"not postgresVersion {version}: the run may upgrade only to the version set",
            f"{set_command('postgresUpgradeTo', version)}, or pulumi config rm "
            f"{PROJECT}:postgresUpgradeTo",
        )
