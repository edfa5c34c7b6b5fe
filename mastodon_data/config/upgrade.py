"""A blue/green major upgrade (hosts and droplets mode): `upgradeFrom` names the generation being
left, its PostgreSQL version and (hosts mode) its servers; postgresVersion and hosts (or, in
droplets mode, image and the droplets made for it) name the one being moved to; `serve` says
which of the two Mastodon writes to after the run (new: the cut-over; old: not yet, or a
rollback). `retire: true` lifts protectData from the old droplets; removing `upgradeFrom`
retires the old servers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mastodon_data.config.checks import Validation, set_command, set_path_command
from mastodon_data.config.hosts import check_duplicates, check_entry_keys, parse_host
from mastodon_data.config.project import PROJECT
from mastodon_data.config.records import Host, PoolSettings, UpgradeSettings
from mastodon_data.config.topology import POSTGRES_VERSIONS

UPGRADE_KEY = "upgradeFrom"
UPGRADE_ENTRY_KEYS = ("postgresVersion", "hosts", "serve", "retire")
SERVE = ("new", "old")
OLD_HOSTS = f"{UPGRADE_KEY}.hosts"
# Modes without a blue/green upgrade: why, and the fix before `pulumi config rm`.
NOT_UPGRADE_MODE = {
    "managed": (
        "managed mode upgrades the cluster in place",
        f"{set_command('postgresUpgradeTo', '<postgresVersion>')}; ",
    ),
}


def parse_upgrade(
    v: Validation, mode: str | None, version: Any, hosts: tuple[Host, ...], pool: PoolSettings
) -> UpgradeSettings | None:
    """`upgradeFrom`, checked against the new generation's `version`, `hosts` and `pool`."""
    value = v.raw.get(UPGRADE_KEY)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        fix = set_path_command(f"{UPGRADE_KEY}.postgresVersion", 15)
        v.bad(UPGRADE_KEY, value, "not an object with postgresVersion and hosts", fix)
        return None
    if mode in NOT_UPGRADE_MODE:
        why, fix = NOT_UPGRADE_MODE[mode]
        v.add(UPGRADE_KEY, "<object>", why, f"{fix}pulumi config rm {PROJECT}:{UPGRADE_KEY}")
        return None
    before = len(v.lines)
    check_entry_keys(v, UPGRADE_KEY, value, UPGRADE_ENTRY_KEYS)
    old_version = check_old_version(v, value.get("postgresVersion"), version)
    old_hosts = parse_old_hosts(v, value.get("hosts"), hosts) if mode == "hosts" else ()
    if mode == "droplets" and "hosts" in value:
        v.add(
            OLD_HOSTS,
            "<list>",
            "droplets mode made the old servers: they are the stack's droplets now",
            f"pulumi config rm --path '{PROJECT}:{OLD_HOSTS}'",
        )
    serve = value.get("serve", "new")
    if serve not in SERVE:
        fix = set_path_command(f"{UPGRADE_KEY}.serve", "new")
        v.bad(f"{UPGRADE_KEY}.serve", serve, "not new or old", fix)
    retire = check_retire(v, value.get("retire", False), serve)
    if pool is None:
        v.add(
            UPGRADE_KEY,
            "<object>",
            "the cut-over pauses PgBouncer's pools, and pgbouncer is off",
            set_command("pgbouncer", "true"),
        )
    if mode not in ("hosts", "droplets") or len(v.lines) > before:
        return None
    return UpgradeSettings(old_version, old_hosts, serve, retire)


def check_retire(v: Validation, retire: Any, serve: Any) -> bool:
    """`retire: true`: the old servers are about to go (protectData lifted from the old
    droplets), so only once Mastodon writes to the new ones."""
    key = f"{UPGRADE_KEY}.retire"
    if not isinstance(retire, bool):
        v.bad(key, retire, "not true or false", set_path_command(key, "true"))
    elif retire and serve == "old":
        v.bad(
            key,
            retire,
            "the old servers still take Mastodon's writes (serve old)",
            f"{set_path_command(f'{UPGRADE_KEY}.serve', 'new')}, pulumi up, then retire",
        )
    return retire is True


def check_old_version(v: Validation, old: Any, new: Any) -> Any:
    key = f"{UPGRADE_KEY}.postgresVersion"
    fix = set_path_command(key, "<the old servers' version>")
    if not isinstance(old, int) or isinstance(old, bool) or old not in POSTGRES_VERSIONS:
        known = f"not {POSTGRES_VERSIONS[0]} to {POSTGRES_VERSIONS[-1]}"
        v.bad(key, old, "missing" if old is None else known, fix)
    elif isinstance(new, int) and old >= new:
        v.bad(
            key,
            old,
            f"not older than postgresVersion {new}: the upgrade goes to a newer major version",
            f"{fix}, and {set_command('postgresVersion', '<the new version>')}",
        )
    return old


def parse_old_hosts(v: Validation, entries: Any, new_hosts: tuple[Host, ...]) -> tuple[Host, ...]:
    """The old servers: the first is their primary, the others its replicas."""
    fix = set_path_command(f"{OLD_HOSTS}[0].publicAddress", "203.0.113.10")
    if not isinstance(entries, list | tuple) or not entries:
        v.bad(OLD_HOSTS, entries, "the old servers are missing (the first: their primary)", fix)
        return ()
    parsed = [
        (index, host)
        for index, entry in enumerate(entries)
        if (host := parse_host(v, index, entry, "replica" if index else "primary", OLD_HOSTS))
    ]
    check_duplicates(v, parsed, OLD_HOSTS)
    taken = {identity for host in new_hosts for identity in identities(host)}
    for index, host in parsed:
        for identity in identities(host):
            if identity in taken:
                v.bad(
                    f"{OLD_HOSTS}[{index}].{identity[0]}",
                    identity[1],
                    "also a server of hosts: the new version runs on servers of its own",
                    f"list the new servers in hosts and the old ones in {OLD_HOSTS}",
                )
    return tuple(host for _, host in parsed)


def identities(host: Host) -> tuple[tuple[str, Any], ...]:
    """What two servers may not share: a name, a public address and port, a private address."""
    return (
        ("name", host.name),
        ("publicAddress", f"{host.public_address}:{host.ssh_port}"),
        ("privateAddress", host.private_address),
    )
