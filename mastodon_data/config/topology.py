"""Topology: the mode, where the servers run (region, VPC, image, sizes, how many replicas),
who reaches them (SSH keys, admin and PostgreSQL sources), the database names and WAL limits."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from mastodon_data.config.checks import (
    Field,
    Validation,
    is_private,
    parse_network,
    set_command,
    set_path_command,
)
from mastodon_data.config.project import DEFAULTS, PROJECT

MODES = ("droplets", "hosts", "managed")
REGIONS = tuple("nyc1 nyc3 sfo2 sfo3 ams3 sgp1 lon1 fra1 tor1 blr1 syd1 atl1".split())
IMAGES = ("ubuntu-24-04-x64", "ubuntu-22-04-x64", "debian-13-x64", "debian-12-x64")
POSTGRES_VERSIONS = range(15, 19)  # extend the stop when a new major is packaged
REPLICA_COUNTS = range(0, 11)
VOLUME_SIZES = range(1, 16385)  # GiB: DigitalOcean's volume limits
VPC_PREFIXES = range(16, 25)
CERTIFICATE_DAYS = range(7, 3651)  # at most the CA's own ten years
CERTIFICATE_RENEW_DAYS = range(1, 366)
CA_ROTATIONS = ("none", "prepare", "switch")  # host/tls.py's stages

# Droplet size slugs: family, then "<n>vcpu-<mem>[-<disk>]" or a bare cpu count (c-4), then an
# optional cpu vendor: s-2vcpu-4gb, s-1vcpu-512mb-10gb, c-4, so1_5-2vcpu-16gb, s-4vcpu-8gb-amd.
SIZE_SLUG = re.compile(
    r"[a-z][a-z0-9_]*-(?:\d+|\d+vcpu-\d+(?:mb|gb)(?:-\d+(?:mb|gb))?)(?:-amd|-intel)?"
)
SQL_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # unquoted identifier, NAMEDATALEN - 1 bytes
SQL_NAME_RULE = "must match ^[a-z_][a-z0-9_]{0,62}$"
UNIX_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
WAL_SIZE = re.compile(r"(\d+)(kB|MB|GB|TB)")  # PostgreSQL's own units, case-sensitive
DURATION = re.compile(r"(\d+)(ms|s|min)")  # PostgreSQL's own units (these three), case-sensitive
UNIT_MS = {"ms": 1, "s": 1000, "min": 60000}
SSH_KEY_ID = re.compile(r"\d+|[0-9a-f]{2}(?::[0-9a-f]{2}){15}")  # DO key id or MD5 fingerprint
UNIT_BYTES = {"kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
ADMIN_EXAMPLE = "203.0.113.7/32"
# Keys of the droplet/hosts topology that would mislead in managed mode (e.g. replicaCount does
# not add a managed replica: managedReplica does).
NOT_FOR_MANAGED = {
    "primarySize": "dbClusterSize",
    "replicaSize": "dbClusterSize (the managed replica has the cluster's size)",
    "replicaCount": "managedReplica",
    "postgresAllowedSources": "appTag, appDropletIds or appCidrs",
    "certificateDays": "DigitalOcean's own certificates",
    "certificateRenewDays": "DigitalOcean's own certificates",
    "caRotation": "DigitalOcean's own certificates",
    "dataVolumeSize": "DigitalOcean sizes the cluster's storage with dbClusterSize",
    "maxConnections": "dbClusterSize (DigitalOcean sets it)",
    "pgbouncer": "poolName and poolSize (DigitalOcean's pgBouncer)",
    "pgbouncerPort": "the pool's port DigitalOcean gives",
    "pgbouncerMaxClientConn": "DigitalOcean's pgBouncer",
    "pgbouncerOpenFiles": "DigitalOcean's pgBouncer",
}


def vpc_problem(text: str) -> str | None:
    network = parse_network(text)
    if isinstance(network, str):
        return network
    if network.version != 4 or not is_private(network):
        return "not inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"
    if network.prefixlen not in VPC_PREFIXES:
        return "the prefix must be /16 to /24"
    return None


def sql_name_problem(text: str, is_role: bool) -> str | None:
    if not SQL_NAME.fullmatch(text):
        return SQL_NAME_RULE
    if text == "postgres":
        owner = "the superuser's" if is_role else "the maintenance database"
        return f"'postgres' is {owner}; Mastodon needs its own"
    if is_role and text.startswith("pg_"):
        return "PostgreSQL reserves role names starting with pg_"
    return None


def role_problem(text: str) -> str | None:
    return sql_name_problem(text, is_role=True)


def database_problem(text: str) -> str | None:
    return sql_name_problem(text, is_role=False)


def wal_bytes(text: str) -> int | None:
    match = WAL_SIZE.fullmatch(text)
    return int(match.group(1)) * UNIT_BYTES[match.group(2)] if match else None


def duration_ms(text: str) -> int | None:
    match = DURATION.fullmatch(text)
    return int(match.group(1)) * UNIT_MS[match.group(2)] if match else None


def duration_check(low: str, high: str):
    """A check that refuses what is not a duration from `low` to `high` (both included)."""

    def problem(text: str) -> str | None:
        ms = duration_ms(text)
        if ms is None:
            return "not a duration like 10s (units ms, s, min)"
        if not duration_ms(low) <= ms <= duration_ms(high):
            return f"not from {low} to {high}"
        return None

    return problem


DROPLET_SIZE = {
    "pattern": SIZE_SLUG,
    "what": "not a droplet size slug like s-2vcpu-4gb",
    "note": "sizes: doctl compute size list",
}
WAL = {"pattern": WAL_SIZE, "what": "not a size like 512MB (units kB, MB, GB, TB)"}
FIELDS = (
    Field("postgresMode", choices=MODES),
    Field("region", choices=REGIONS),
    Field("vpcCidr", check=vpc_problem),
    Field("image", choices=IMAGES),
    Field("primarySize", **DROPLET_SIZE),
    Field("replicaSize", **DROPLET_SIZE),
    Field("replicaCount", allowed=REPLICA_COUNTS),
    Field("postgresVersion", allowed=POSTGRES_VERSIONS),
    Field("dataVolumeSize", allowed=VOLUME_SIZES),
    Field(
        "sshKeyIds",
        example="<key id>",
        pattern=SSH_KEY_ID,
        what="not a DigitalOcean SSH key id or MD5 fingerprint",
        item_example="<id>",
        note="ids and fingerprints: doctl compute ssh-key list",
    ),
    Field("sshUser", pattern=UNIX_USER, what="not a valid unix user name"),
    Field("adminCidrs", example=ADMIN_EXAMPLE),  # entries: check_admin_cidrs
    Field("postgresAllowedSources"),  # example: the VPC's default range; check_allowed_sources
    Field("dbName", check=database_problem),
    Field("dbUser", check=role_problem),
    Field("replicationUser", check=role_problem),
    Field("walKeepSize", **WAL),
    Field("maxSlotWalKeepSize", **WAL),
    # Below 3s a busy primary's pause would look like a dead link; the keepalive probes need
    # whole seconds.
    Field("replicationTimeout", check=duration_check("3s", "60min")),
    Field("walRetrieveRetryInterval", check=duration_check("100ms", "5min")),
    Field("certificateDays", allowed=CERTIFICATE_DAYS),
    Field("certificateRenewDays", allowed=CERTIFICATE_RENEW_DAYS),
    Field("caRotation", choices=CA_ROTATIONS, example="prepare"),
)


def parse_topology(v: Validation) -> dict[str, Any]:
    """The topology's Settings fields (by name), checked together; problems go to `v`."""
    values = v.read(FIELDS, postgresAllowedSources=DEFAULTS["vpcCidr"])
    mode = values["postgresMode"] if v.ok("postgresMode") else None
    vpc = ipaddress.ip_network(values["vpcCidr"]) if v.ok("vpcCidr") else None
    if mode == "managed":
        check_not_for_managed(v)
    if mode == "hosts":
        check_not_for_hosts(v)
    if mode == "droplets" and values["sshKeyIds"] == ():
        v.bad(
            "sshKeyIds",
            [],
            "droplets mode needs at least one DigitalOcean SSH key",
            f"{set_path_command('sshKeyIds[0]', '<id>')} (ids: doctl compute ssh-key list)",
        )
    if values["adminCidrs"] is not None:
        check_admin_cidrs(v, values["adminCidrs"], mode)
    if values["postgresAllowedSources"] is not None:
        check_allowed_sources(v, values["postgresAllowedSources"], mode, vpc)
    if values["dbUser"] is not None and values["replicationUser"] == values["dbUser"]:
        v.bad(
            "replicationUser",
            values["replicationUser"],
            "the same role as dbUser; replication needs a role of its own",
            set_command("replicationUser", DEFAULTS["replicationUser"]),
        )
    check_wal_limits(v, values["walKeepSize"], values["maxSlotWalKeepSize"])
    check_certificate_window(v, values["certificateDays"], values["certificateRenewDays"])
    return {
        "mode": values["postgresMode"],
        "region": values["region"],
        "vpc_cidr": str(vpc),
        "image": values["image"],
        "primary_size": values["primarySize"],
        "replica_size": values["replicaSize"],
        "replica_count": values["replicaCount"],
        "postgres_version": values["postgresVersion"],
        "data_volume_size": values["dataVolumeSize"],
        "ssh_key_ids": values["sshKeyIds"],
        "ssh_user": values["sshUser"],
        "admin_cidrs": values["adminCidrs"],
        "postgres_allowed_sources": values["postgresAllowedSources"] or (str(vpc),),
        "db_name": values["dbName"],
        "db_user": values["dbUser"],
        "replication_user": values["replicationUser"],
        "wal_keep_size": values["walKeepSize"],
        "max_slot_wal_keep_size": values["maxSlotWalKeepSize"],
        "replication_timeout": values["replicationTimeout"],
        "wal_retrieve_retry_interval": values["walRetrieveRetryInterval"],
        "certificate_days": values["certificateDays"],
        "certificate_renew_days": values["certificateRenewDays"],
        "ca_rotation": values["caRotation"],
    }


def check_not_for_managed(v: Validation) -> None:
    for key, instead in NOT_FOR_MANAGED.items():
        # The engine passes Pulumi.yaml's defaults as if set: only a changed value is an error.
        if v.raw.get(key) is not None and v.raw[key] != DEFAULTS.get(key):
            v.bad(
                key,
                v.raw[key],
                f"not used in managed mode (there: {instead})",
                f"pulumi config rm {PROJECT}:{key}",
            )


def check_not_for_hosts(v: Validation) -> None:
    """Existing hosts bring their own disks: a data device is named per host."""
    key = "dataVolumeSize"
    if v.raw.get(key) is not None and v.raw[key] != DEFAULTS.get(key):
        v.bad(
            key,
            v.raw[key],
            "droplets mode only (hosts mode: name each host's disk as its dataDevice)",
            f"pulumi config rm {PROJECT}:{key} && "
            f"{set_path_command('hosts[0].dataDevice', '/dev/disk/by-id/<id>')}",
        )


def check_admin_cidrs(v: Validation, values: tuple[str, ...], mode: str | None) -> None:
    if not values and mode == "droplets":
        v.bad(
            "adminCidrs",
            [],
            "droplets mode needs at least one address allowed to reach SSH (port 22)",
            set_path_command(
                "adminCidrs[0]", f"{ADMIN_EXAMPLE}  # your office/VPN/bastion address"
            ),
        )
    opens = (
        "SSH to the whole internet",
        f"{ADMIN_EXAMPLE}  # your office/VPN/bastion address as /32",
    )
    v.cidr_entries("adminCidrs", values, ADMIN_EXAMPLE, opens)  # no further check needed


def check_allowed_sources(
    v: Validation,
    values: tuple[str, ...],
    mode: str | None,
    vpc: ipaddress.IPv4Network | ipaddress.IPv6Network | None,
) -> None:
    opens = ("PostgreSQL to every address", "<the private range of the Mastodon servers>")
    for key, text, network in v.cidr_entries(
        "postgresAllowedSources", values, DEFAULTS["vpcCidr"], opens
    ):
        if not is_private(network):
            v.bad(
                key,
                text,
                "not a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7)",
                set_path_command(key, "<the private range of the Mastodon servers>"),
            )
        elif (
            mode == "droplets"
            and vpc is not None
            and (network.version != vpc.version or not network.subnet_of(vpc))
        ):
            v.bad(
                key,
                text,
                f"not inside vpcCidr {vpc} (droplets mode)",
                set_path_command(key, str(vpc)),
            )


def check_wal_limits(v: Validation, keep: str | None, slot: str | None) -> None:
    """A slot may hold more WAL than wal_keep_size keeps, never less, and never nothing."""
    keep_bytes = wal_bytes(keep) if keep is not None else None
    slot_bytes = wal_bytes(slot) if slot is not None else None
    if slot_bytes == 0:
        v.bad(
            "maxSlotWalKeepSize",
            slot,
            "0 would drop a replica's slot as soon as it lags",
            set_command("maxSlotWalKeepSize", DEFAULTS["maxSlotWalKeepSize"]),
        )
    elif slot_bytes is not None and keep_bytes is not None and slot_bytes < keep_bytes:
        v.bad(
            "maxSlotWalKeepSize",
            slot,
            f"smaller than walKeepSize {keep}",
            set_command("maxSlotWalKeepSize", keep) + " (or larger)",
        )


def check_certificate_window(v: Validation, days: int | None, renew_days: int | None) -> None:
    """A certificate must live longer than its renewal window, or every run would renew it."""
    if days is None or renew_days is None or not v.ok("certificateDays", "certificateRenewDays"):
        return
    if renew_days >= days:
        v.bad(
            "certificateRenewDays",
            renew_days,
            f"not less than certificateDays {days}: every run would renew the certificates",
            set_command("certificateRenewDays", max(1, min(30, days // 4))),
        )
