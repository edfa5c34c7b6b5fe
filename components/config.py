"""The stack's settings, validated in one place before anything is created.

Pure: no Pulumi import and no I/O, so the Pulumi program, the direct runner and the tests share
it. Every problem is collected and reported at once, one line each, naming the key, the bad value
(never a secret's) and the exact fix.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PROJECT = "mastodon-data"

# Equal to the `default:` of each key in Pulumi.yaml (a unit test keeps them in step).
DEFAULTS: dict[str, Any] = {
    "postgresMode": "droplets",
    "region": "nyc3",
    "vpcCidr": "10.118.0.0/20",
    "image": "ubuntu-24-04-x64",
    "primarySize": "s-2vcpu-4gb",
    "replicaSize": "s-2vcpu-4gb",
    "replicaCount": 1,
    "postgresVersion": 18,
    "sshKeyIds": [],
    "sshUser": "root",
    "adminCidrs": [],
    "postgresAllowedSources": [],
    "dbName": "mastodon_production",
    "dbUser": "mastodon",
    "replicationUser": "replicator",
    "walKeepSize": "1GB",
    "maxSlotWalKeepSize": "10GB",
    # managed mode (DigitalOcean managed PostgreSQL)
    "dbClusterSize": "db-s-2vcpu-4gb",
    "dbNodeCount": 2,
    "poolName": "mastodon_pool",
    "poolSize": 50,
    "managedReplica": False,
    "managedReplicaRegion": "",
    # who may reach the managed databases (PostgreSQL and Valkey firewalls)
    "appTag": "",
    "appDropletIds": [],
    "appCidrs": [],
    # object storage (any mode)
    "spacesBucket": "",
    "spacesRegion": "",
    "corsOrigins": ["*"],
    "cdnCustomDomain": "",
    "cdnDnsDomain": "",
    "cdnCertificateName": "",
    # Redis (any mode)
    "redisMode": "none",
    "redisSize": "db-s-1vcpu-2gb",
    "redisNodeCount": 1,
}
# The secrets droplets and hosts mode need (replication over SSH); see required_secrets().
SECRET_KEYS = ("sshPrivateKey", "replicationPassword", "dbPassword")
REDIS_URL_KEY = "redisUrl"  # redisMode external: the existing Redis, as a secret
ALL_SECRET_KEYS = (*SECRET_KEYS, REDIS_URL_KEY)
# Keys read elsewhere (operations switches in components/stack_config.py), not settings.
OPERATION_KEYS = frozenset({"reseedReplicas"})
HOSTS_KEY = "hosts"

MODES = ("droplets", "hosts", "managed")
REDIS_MODES = ("none", "managed", "external")
REGIONS = tuple("nyc1 nyc3 sfo2 sfo3 ams3 sgp1 lon1 fra1 tor1 blr1 syd1 atl1".split())
IMAGES = ("ubuntu-24-04-x64", "ubuntu-22-04-x64", "debian-12-x64")
POSTGRES_VERSIONS = range(15, 19)  # extend the stop when a new major is packaged
REPLICA_COUNTS = range(0, 11)
VPC_PREFIXES = range(16, 25)
PRIVATE_V4 = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
PRIVATE_V6 = ipaddress.ip_network("fc00::/7")

# Droplet size slugs: family, then "<n>vcpu-<mem>[-<disk>]" or a bare cpu count (c-4), then an
# optional cpu vendor: s-2vcpu-4gb, s-1vcpu-512mb-10gb, c-4, so1_5-2vcpu-16gb, s-4vcpu-8gb-amd.
SIZE_SLUG = re.compile(
    r"[a-z][a-z0-9_]*-(?:\d+|\d+vcpu-\d+(?:mb|gb)(?:-\d+(?:mb|gb))?)(?:-amd|-intel)?"
)
SQL_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # unquoted identifier, NAMEDATALEN - 1 bytes
UNIX_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
HOST_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
WAL_SIZE = re.compile(r"(\d+)(kB|MB|GB|TB)")  # PostgreSQL's own units, case-sensitive
SSH_KEY_ID = re.compile(r"\d+|[0-9a-f]{2}(?::[0-9a-f]{2}){15}")  # DO key id or MD5 fingerprint
HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
HOST_ENTRY_KEYS = ("name", "publicAddress", "privateAddress", "sshUser", "sshPort", "hostKey")
UNIT_BYTES = {"kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}

# Managed database size slugs (`doctl databases options slugs --engine pg`): family, vCPUs, RAM,
# e.g. db-s-2vcpu-4gb, db-intel-1vcpu-2gb, db-amd-2vcpu-4gb, gd-2vcpu-8gb, m-2vcpu-16gb,
# so1_5-2vcpu-16gb. The RAM decides the connection limit below.
DB_SIZE_SLUG = re.compile(r"(?:db-s|db-intel|db-amd|gd|m|m3|so1_5)-(\d+)vcpu-(\d+)gb")
# DigitalOcean: "Clusters provide 25 connections per 1 GiB of RAM. 3 connections per cluster are
# reserved for maintenance, and all remaining connections can be allocated to connection pools."
# (docs.digitalocean.com/products/databases/postgresql/how-to/manage-connection-pools/). So:
#   1 GiB: 22   2 GiB: 47   4 GiB: 97   8 GiB: 197   16 GiB: 397   32 GiB: 797   64 GiB: 1597
CONNECTIONS_PER_GIB = 25
RESERVED_CONNECTIONS = 3
# "Database clusters may have zero, one, or two standby nodes ... with the exception of the
# smallest plan of single node clusters" (docs.digitalocean.com/products/databases/).
NODE_COUNTS = range(1, 4)
SMALLEST_PLAN_GIB = 1
# Spaces is not offered in nyc1 (the other regions of REGIONS have it).
SPACES_REGIONS = tuple(r for r in REGIONS if r != "nyc1")
# Bucket names become DNS labels (<bucket>.<region>.digitaloceanspaces.com): no dots, so the
# wildcard certificate of the endpoint matches.
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
CORS_ORIGIN = re.compile(r"\*|https?://[A-Za-z0-9.-]+(?::\d{1,5})?")
DO_TAG = re.compile(r"[A-Za-z0-9:_.-]{1,255}")  # DigitalOcean tag names
DROPLET_ID = re.compile(r"\d{1,20}")
MAX_FIREWALL_RULES = 100  # DigitalOcean: a database firewall holds at most 100 trusted sources
# Keys of the droplet/hosts topology that would mislead in managed mode (e.g. replicaCount does
# not add a managed replica: managedReplica does).
NOT_FOR_MANAGED = {
    "primarySize": "dbClusterSize",
    "replicaSize": "dbClusterSize (the managed replica has the cluster's size)",
    "replicaCount": "managedReplica",
    "postgresAllowedSources": "appTag, appDropletIds or appCidrs",
}
MIN_PASSWORD_LENGTH = 16

NEW_PASSWORD = '"$(openssl rand -base64 32)"'
SECRET_FIXES = {
    "sshPrivateKey": f"cat ~/.ssh/id_ed25519 | pulumi config set --secret {PROJECT}:sshPrivateKey",
    "replicationPassword": (
        f"pulumi config set --secret {PROJECT}:replicationPassword {NEW_PASSWORD}"
    ),
    "dbPassword": f"pulumi config set --secret {PROJECT}:dbPassword {NEW_PASSWORD}",
    REDIS_URL_KEY: (
        f"pulumi config set --secret {PROJECT}:{REDIS_URL_KEY} "
        "'rediss://default:<password>@<host>:<port>'"
    ),
}


class ConfigError(ValueError):
    """All problems of a stack's settings, one per line."""


@dataclass(frozen=True)
class HostSpec:
    name: str
    public_address: str
    private_address: str
    ssh_user: str = "root"
    ssh_port: int = 22
    host_key: str | None = None


@dataclass(frozen=True)
class AppSources:
    """Who may connect to the managed databases: DigitalOcean firewall rules (trusted sources)."""

    tag: str = ""
    droplet_ids: tuple[str, ...] = ()
    cidrs: tuple[str, ...] = ()

    def firewall_rules(self) -> list[dict[str, str]]:
        rules = [{"type": "tag", "value": self.tag}] if self.tag else []
        rules += [{"type": "droplet", "value": d} for d in self.droplet_ids]
        rules += [{"type": "ip_addr", "value": c} for c in self.cidrs]
        return rules


@dataclass(frozen=True)
class ManagedPostgresSettings:
    size: str
    node_count: int
    pool_name: str
    pool_size: int
    replica: bool  # a read-only node in the cluster's region, reached directly (no pool)


@dataclass(frozen=True)
class SpacesSettings:
    bucket: str
    region: str
    cors_origins: tuple[str, ...]
    cdn_custom_domain: str = ""
    cdn_dns_domain: str = ""  # Let's Encrypt certificate through DigitalOcean DNS
    cdn_certificate_name: str = ""  # or a certificate already in the account


@dataclass(frozen=True)
class RedisSettings:
    mode: str  # managed (Valkey made here) or external (redisUrl secret)
    size: str
    node_count: int


@dataclass(frozen=True)
class Settings:
    mode: str
    region: str
    vpc_cidr: str
    image: str
    primary_size: str
    replica_size: str
    replica_count: int
    postgres_version: int
    ssh_key_ids: tuple[str, ...]
    ssh_user: str
    admin_cidrs: tuple[str, ...]
    postgres_allowed_sources: tuple[str, ...]
    db_name: str
    db_user: str
    replication_user: str
    wal_keep_size: str
    max_slot_wal_keep_size: str
    hosts: tuple[HostSpec, ...]  # hosts mode: [0] primary, [1..replica_count] replicas, rest spares
    port: int = 5432
    managed: ManagedPostgresSettings | None = None  # managed mode only
    spaces: SpacesSettings | None = None
    redis: RedisSettings | None = None
    app_sources: AppSources = AppSources()
    warnings: tuple[str, ...] = ()  # accepted, but worth a line in the preview

    def required_secrets(self) -> tuple[str, ...]:
        return required_secrets(self.mode, self.redis.mode if self.redis else "none")


def required_secrets(mode: str | None, redis_mode: str | None) -> tuple[str, ...]:
    """Managed PostgreSQL makes its own password; droplets and hosts need the replication trio."""
    needed = () if mode == "managed" else SECRET_KEYS
    return (*needed, REDIS_URL_KEY) if redis_mode == "external" else needed


def connection_limit(size: str) -> int | None:
    """Backend connections DigitalOcean lets pools use on a cluster of `size`, or None."""
    match = DB_SIZE_SLUG.fullmatch(size)
    return int(match.group(2)) * CONNECTIONS_PER_GIB - RESERVED_CONNECTIONS if match else None


class _Problems:
    """Collects problem lines in the one format the operator reads."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, key: str, shown: str, what: str, fix: str) -> None:
        self.lines.append(f"{PROJECT}:{key} = {shown}: {what}. Fix: {fix}")

    def bad(self, key: str, value: Any, what: str, fix: str) -> None:
        self.add(key, repr(value), what, fix)


def _set(key: str, example: Any) -> str:
    return f"pulumi config set {PROJECT}:{key} {example}"


def _set_path(path: str, example: Any) -> str:
    return f"pulumi config set --path '{PROJECT}:{path}' {example}"


def _text(problems: _Problems, key: str, value: Any, example: str) -> str | None:
    if isinstance(value, str):
        return value
    problems.bad(key, value, "not a string", _set(key, example))
    return None


def _integer(problems: _Problems, key: str, value: Any, allowed: range, fix: str) -> int | None:
    """An int in `allowed`; numeric strings count (config values often arrive as text)."""
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        number = int(value)
    if number is None or number not in allowed:
        problems.bad(key, value, f"not an integer from {allowed.start} to {allowed.stop - 1}", fix)
        return None
    return number


def _text_list(problems: _Problems, key: str, value: Any, example: str) -> tuple[str, ...] | None:
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(value)
    problems.bad(key, value, "not a list of strings", _set_path(f"{key}[0]", example))
    return None


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | str:
    """The network, or why `text` is not a strict CIDR."""
    if "/" not in text:
        return "not a CIDR (no /prefix)"
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        if "host bits set" in str(error):
            return f"has host bits set (the network is {ipaddress.ip_network(text, strict=False)})"
        return "not a valid CIDR"


def _cidr_entries(
    problems: _Problems,
    name: str,
    values: Iterable[str],
    example: str,
    opens: tuple[str, str],
    bare_address_ok: bool = False,
) -> list[tuple[str, str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """(key, text, network) of each entry of the list `name` that is a CIDR narrower than /0;
    the others are reported: not a CIDR (fix: `example`), or /0 (`opens` = what it would open
    to everyone, and the fix)."""
    entries = []
    for index, text in enumerate(values):
        key = f"{name}[{index}]"
        network = _network(f"{text}/32" if bare_address_ok and "/" not in text else text)
        if isinstance(network, str):
            problems.bad(key, text, network, _set_path(key, example))
        elif network.prefixlen == 0:
            problems.bad(key, text, f"opens {opens[0]}", _set_path(key, opens[1]))
        else:
            entries.append((key, text, network))
    return entries


def _is_private(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    if network.version == 6:
        return network.subnet_of(PRIVATE_V6)
    return any(network.subnet_of(private) for private in PRIVATE_V4)


def _wal_bytes(text: str) -> int | None:
    match = WAL_SIZE.fullmatch(text)
    return int(match.group(1)) * UNIT_BYTES[match.group(2)] if match else None


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_dns_name(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    if len(text) > 253 or labels[-1].isdigit():  # all-digit last label: a mistyped IP address
        return False
    return all(DNS_LABEL.fullmatch(label) for label in labels)


def _host_key_problem(text: str) -> str | None:
    """Why `text` is not an OpenSSH public key line ("<type> <base64> [comment]")."""
    parts = text.split()
    if len(parts) < 2 or parts[0] not in HOST_KEY_TYPES:
        return f"not '<type> <base64>' with a type among {', '.join(HOST_KEY_TYPES)}"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return "the key part is not valid base64 (copied only in part?)"
    # The blob is length-prefixed fields, the first its own type name: a field running past the
    # end or a different name means a truncated or mixed-up key.
    fields, offset = [], 0
    while offset + 4 <= len(blob):
        length = int.from_bytes(blob[offset : offset + 4], "big")
        fields.append(blob[offset + 4 : offset + 4 + length])
        offset += 4 + length
    if offset != len(blob) or len(fields) < 2 or fields[0] != parts[0].encode():
        return f"the key data is not a whole {parts[0]} key (copied only in part?)"
    return None


def _check_choice(
    problems: _Problems, key: str, value: str, choices: Collection[str], example: str
) -> None:
    if value not in choices:
        problems.bad(key, value, f"not one of {', '.join(choices)}", _set(key, example))


def _check_vpc(problems: _Problems, value: str) -> ipaddress.IPv4Network | None:
    fix = _set("vpcCidr", DEFAULTS["vpcCidr"])
    network = _network(value)
    if isinstance(network, str):
        problems.bad("vpcCidr", value, network, fix)
        return None
    if network.version != 4 or not _is_private(network):
        problems.bad(
            "vpcCidr", value, "not inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16", fix
        )
        return None
    if network.prefixlen not in VPC_PREFIXES:
        problems.bad("vpcCidr", value, "the prefix must be /16 to /24", fix)
        return None
    return network


def _check_admin_cidrs(problems: _Problems, values: tuple[str, ...], mode: str | None) -> None:
    example = "203.0.113.7/32"
    if not values and mode == "droplets":
        problems.bad(
            "adminCidrs",
            [],
            "droplets mode needs at least one address allowed to reach SSH (port 22)",
            _set_path("adminCidrs[0]", f"{example}  # your office/VPN/bastion address"),
        )
    opens = ("SSH to the whole internet", f"{example}  # your office/VPN/bastion address as /32")
    _cidr_entries(problems, "adminCidrs", values, example, opens)  # no further check needed


def _check_allowed_sources(
    problems: _Problems,
    values: tuple[str, ...],
    mode: str | None,
    vpc: ipaddress.IPv4Network | None,
) -> None:
    example = "10.118.0.0/20"
    opens = ("PostgreSQL to every address", "<the private range of the Mastodon servers>")
    for key, text, network in _cidr_entries(
        problems, "postgresAllowedSources", values, example, opens
    ):
        if not _is_private(network):
            problems.bad(
                key,
                text,
                "not a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7)",
                _set_path(key, "<the private range of the Mastodon servers>"),
            )
        elif (
            mode == "droplets"
            and vpc is not None
            and (network.version != vpc.version or not network.subnet_of(vpc))
        ):
            problems.bad(
                key, text, f"not inside vpcCidr {vpc} (droplets mode)", _set_path(key, str(vpc))
            )


def _check_sql_name(problems: _Problems, key: str, value: str, is_role: bool) -> None:
    fix = _set(key, DEFAULTS[key])
    if not SQL_NAME.fullmatch(value):
        problems.bad(key, value, "must match ^[a-z_][a-z0-9_]{0,62}$", fix)
    elif value == "postgres":
        owner = "the superuser's" if is_role else "the maintenance database"
        problems.bad(key, value, f"'postgres' is {owner}; Mastodon needs its own", fix)
    elif is_role and value.startswith("pg_"):
        problems.bad(key, value, "PostgreSQL reserves role names starting with pg_", fix)


def _parse_host(
    problems: _Problems, index: int, entry: Any, example_address: str
) -> HostSpec | None:
    prefix = f"{HOSTS_KEY}[{index}]"
    if not isinstance(entry, Mapping):
        problems.bad(
            prefix,
            entry,
            "not an object with publicAddress and privateAddress",
            _set_path(f"{prefix}.publicAddress", "203.0.113.10"),
        )
        return None
    before = len(problems.lines)
    for key in entry:
        if key not in HOST_ENTRY_KEYS:
            close = difflib.get_close_matches(str(key), HOST_ENTRY_KEYS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            problems.bad(
                f"{prefix}.{key}",
                entry[key],
                f"unknown key (known: {', '.join(HOST_ENTRY_KEYS)})",
                f"{hint}pulumi config rm --path '{PROJECT}:{prefix}.{key}'",
            )

    name = entry.get("name", f"host{index}")
    if not isinstance(name, str) or not HOST_NAME.fullmatch(name):
        problems.bad(
            f"{prefix}.name",
            name,
            "must match ^[a-z0-9][a-z0-9-]{0,62}$",
            _set_path(f"{prefix}.name", f"db-{index}"),
        )

    public = entry.get("publicAddress")
    if not isinstance(public, str) or not (_is_address(public) or _is_dns_name(public)):
        what = "missing" if public is None else "not an IP address or DNS name"
        problems.bad(
            f"{prefix}.publicAddress",
            public,
            what,
            _set_path(f"{prefix}.publicAddress", "203.0.113.10"),
        )

    private = entry.get("privateAddress")
    if not isinstance(private, str) or not _is_address(private):
        what = "missing" if private is None else "not an IP address"
        problems.bad(
            f"{prefix}.privateAddress",
            private,
            what,
            _set_path(f"{prefix}.privateAddress", example_address),
        )

    ssh_user = entry.get("sshUser", "root")
    if not isinstance(ssh_user, str) or not UNIX_USER.fullmatch(ssh_user):
        problems.bad(
            f"{prefix}.sshUser",
            ssh_user,
            "not a valid unix user name",
            _set_path(f"{prefix}.sshUser", "root"),
        )

    ssh_port = _integer(
        problems,
        f"{prefix}.sshPort",
        entry.get("sshPort", 22),
        range(1, 65536),
        _set_path(f"{prefix}.sshPort", 22),
    )

    host_key = entry.get("hostKey")
    if host_key is not None:
        why = _host_key_problem(host_key) if isinstance(host_key, str) else "not a string"
        if why:
            problems.bad(
                f"{prefix}.hostKey",
                host_key,
                why,
                "ssh-keyscan -p <sshPort> -t ed25519 <publicAddress> | cut -d' ' -f2- | "
                f"pulumi config set --path '{PROJECT}:{prefix}.hostKey'",
            )

    if len(problems.lines) > before:
        return None
    # Kept as "<type> <base64>": the form both known_hosts and the SSH libraries read.
    known_key = " ".join(host_key.split()[:2]) if host_key else None
    return HostSpec(name, public, private, ssh_user, ssh_port, known_key)


def _check_duplicates(problems: _Problems, hosts: list[tuple[int, HostSpec]]) -> None:
    seen: dict[tuple[str, Any], int] = {}
    for index, host in hosts:
        for field, label, value in (
            ("name", "name", host.name),
            ("publicAddress", "publicAddress and sshPort", (host.public_address, host.ssh_port)),
            ("privateAddress", "privateAddress", host.private_address),
        ):
            first = seen.setdefault((field, value), index)
            if first != index:
                shown = value if field != "publicAddress" else host.public_address
                problems.bad(
                    f"{HOSTS_KEY}[{index}].{field}",
                    shown,
                    f"same {label} as {HOSTS_KEY}[{first}]",
                    f"give each host its own {label}, or remove the duplicate entry",
                )


def _parse_hosts(
    problems: _Problems, value: Any, mode: str | None, replica_count: int | None
) -> tuple[HostSpec, ...]:
    entries = [] if value is None else value
    if not isinstance(entries, list | tuple):
        problems.bad(
            HOSTS_KEY,
            value,
            "not a list of host objects",
            _set_path(f"{HOSTS_KEY}[0].publicAddress", "203.0.113.10"),
        )
        return ()
    if mode == "droplets":
        if entries:
            problems.add(
                HOSTS_KEY,
                f"<{len(entries)} entries>",
                "hosts are only used in hosts mode; droplets mode creates its own",
                f"{_set('postgresMode', 'hosts')}, or pulumi config rm {PROJECT}:hosts",
            )
        return ()
    if mode == "managed":
        if entries:
            problems.add(
                HOSTS_KEY,
                f"<{len(entries)} entries>",
                "hosts are only used in hosts mode; managed mode runs no servers of its own",
                f"pulumi config rm {PROJECT}:hosts",
            )
        return ()
    if mode != "hosts":
        return ()
    if not entries:
        problems.bad(
            HOSTS_KEY,
            [],
            "hosts mode needs at least one host (the primary)",
            f"{_set_path('hosts[0].publicAddress', '203.0.113.10')} && "
            f"{_set_path('hosts[0].privateAddress', '10.0.0.10')}",
        )
        return ()
    parsed = [
        (index, host)
        for index, entry in enumerate(entries)
        if (host := _parse_host(problems, index, entry, f"10.0.0.{10 + index}")) is not None
    ]
    _check_duplicates(problems, parsed)
    needed = 1 + (replica_count or 0)
    if replica_count is not None and len(entries) < needed:
        problems.add(
            HOSTS_KEY,
            f"<{len(entries)} entries>",
            f"replicaCount {replica_count} needs {needed} hosts (a primary and "
            f"{replica_count} replicas)",
            f"add hosts ({_set_path(f'hosts[{len(entries)}].publicAddress', '<address>')}"
            f" ...) or lower replicaCount ({_set('replicaCount', len(entries) - 1)})",
        )
    return tuple(host for _, host in parsed)


def _boolean(problems: _Problems, key: str, value: Any) -> bool | None:
    """A bool; "true"/"false" count (config values often arrive as text)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    problems.bad(key, value, "not true or false", _set(key, "true"))
    return None


def _db_size(problems: _Problems, key: str, value: Any) -> str | None:
    size = _text(problems, key, value, DEFAULTS[key])
    if size is not None and not DB_SIZE_SLUG.fullmatch(size):
        problems.bad(
            key,
            size,
            "not a database size slug like db-s-2vcpu-4gb",
            f"{_set(key, DEFAULTS[key])} (sizes: doctl databases options slugs --engine pg)",
        )
        return None
    return size


def _parse_managed(
    problems: _Problems, value, mode: str | None, region: str | None, warnings: list[str]
) -> ManagedPostgresSettings | None:
    """Managed PostgreSQL: cluster size, standby nodes, the pgBouncer pool, the read replica."""
    if mode != "managed":
        return None
    size = _db_size(problems, "dbClusterSize", value("dbClusterSize"))
    node_count = _integer(
        problems, "dbNodeCount", value("dbNodeCount"), NODE_COUNTS, _set("dbNodeCount", 2)
    )
    if node_count == 1:
        warnings.append(
            f"{PROJECT}:dbNodeCount = 1: no standby node, so no automatic failover; DigitalOcean "
            f"maintenance and node failures take the database down. "
            f"For production: {_set('dbNodeCount', 2)}"
        )
    elif node_count is not None and size is not None:
        gib = int(DB_SIZE_SLUG.fullmatch(size).group(2))
        if gib <= SMALLEST_PLAN_GIB:
            problems.bad(
                "dbNodeCount",
                node_count,
                f"the smallest plan ({size}) cannot have standby nodes",
                f"{_set('dbClusterSize', 'db-s-1vcpu-2gb')} (or larger), or "
                f"{_set('dbNodeCount', 1)}",
            )
    pool_name = _text(problems, "poolName", value("poolName"), DEFAULTS["poolName"])
    if pool_name is not None and not SQL_NAME.fullmatch(pool_name):
        problems.bad(
            "poolName",
            pool_name,
            "must match ^[a-z_][a-z0-9_]{0,62}$ (Mastodon connects to it as DB_NAME)",
            _set("poolName", DEFAULTS["poolName"]),
        )
    # The pool's upper bound is the cluster's connection limit (unknown for a bad size slug).
    limit = connection_limit(size) if size is not None else None
    raw_pool = value("poolSize")
    pool_size = _integer(problems, "poolSize", raw_pool, range(1, 10**6), _set("poolSize", 20))
    if pool_size is not None and limit is not None and pool_size > limit:
        problems.bad(
            "poolSize",
            raw_pool,
            f"larger than {size} allows: {limit} backend connections (25 per GiB of RAM, "
            f"{RESERVED_CONNECTIONS} reserved by DigitalOcean)",
            f"{_set('poolSize', min(limit, DEFAULTS['poolSize']))}, or a larger dbClusterSize",
        )
        pool_size = None
    replica = _boolean(problems, "managedReplica", value("managedReplica"))
    replica_region = _text(
        problems, "managedReplicaRegion", value("managedReplicaRegion"), region or "nyc3"
    )
    if replica_region and region is not None and replica_region != region:
        problems.bad(
            "managedReplicaRegion",
            replica_region,
            f"not the stack's region {region}: a read-only node elsewhere is reachable only "
            "over the public network (private hostnames work within one region), too far for "
            "Mastodon's reads",
            f"pulumi config rm {PROJECT}:managedReplicaRegion (the replica then runs in {region})",
        )
    if None in (size, node_count, pool_name, pool_size, replica, replica_region):
        return None
    return ManagedPostgresSettings(size, node_count, pool_name, pool_size, replica)


def _parse_app_sources(problems: _Problems, value, needed: bool) -> AppSources:
    tag = _text(problems, "appTag", value("appTag"), "mastodon-app") or ""
    if tag and not DO_TAG.fullmatch(tag):
        problems.bad(
            "appTag",
            tag,
            "not a DigitalOcean tag name (letters, digits, : - _ .)",
            _set("appTag", "mastodon-app"),
        )
    droplet_ids = _text_list(problems, "appDropletIds", value("appDropletIds"), "<droplet id>")
    for index, droplet_id in enumerate(droplet_ids or ()):
        if not DROPLET_ID.fullmatch(droplet_id):
            problems.bad(
                f"appDropletIds[{index}]",
                droplet_id,
                "not a droplet id (digits)",
                f"{_set_path(f'appDropletIds[{index}]', '<id>')} (ids: doctl compute droplet list)",
            )
    cidrs = _text_list(problems, "appCidrs", value("appCidrs"), "203.0.113.7/32")
    opens = ("the managed databases to every address", "<the address of a Mastodon server>/32")
    for key, text, network in _cidr_entries(
        problems, "appCidrs", cidrs or (), "203.0.113.7/32", opens, bare_address_ok=True
    ):
        if network.version != 4:
            problems.bad(
                key,
                text,
                "IPv6: DigitalOcean database firewalls take IPv4 only",
                _set_path(key, "203.0.113.7/32"),
            )
    sources = AppSources(tag, tuple(droplet_ids or ()), tuple(cidrs or ()))
    rules = len(sources.firewall_rules())
    if needed and rules == 0 and droplet_ids is not None and cidrs is not None:
        problems.bad(
            "appTag",
            tag,
            "the managed databases need at least one app source (appTag, appDropletIds or "
            "appCidrs) for their firewall; without one DigitalOcean lets every address connect",
            f"{_set('appTag', 'mastodon-app')}  # the tag on the Mastodon droplets",
        )
    elif rules > MAX_FIREWALL_RULES:
        problems.add(
            "appCidrs",
            f"<{rules} rules>",
            f"a database firewall holds at most {MAX_FIREWALL_RULES} sources",
            "tag the Mastodon droplets and use appTag instead of listing them",
        )
    return sources


def _parse_spaces(problems: _Problems, value, region: str | None) -> SpacesSettings | None:
    """Spaces bucket + CDN; none without spacesBucket (then the CDN keys must be unset too)."""
    bucket = _text(problems, "spacesBucket", value("spacesBucket"), "mastodon-media-example")
    spaces_region = _text(problems, "spacesRegion", value("spacesRegion"), "nyc3")
    custom = _text(problems, "cdnCustomDomain", value("cdnCustomDomain"), "media.example.social")
    dns = _text(problems, "cdnDnsDomain", value("cdnDnsDomain"), "example.social")
    certificate = _text(problems, "cdnCertificateName", value("cdnCertificateName"), "media-cert")
    origins = _text_list(problems, "corsOrigins", value("corsOrigins"), "'*'")
    if bucket and not BUCKET_NAME.fullmatch(bucket):
        problems.bad(
            "spacesBucket",
            bucket,
            "not a DNS-compatible bucket name (3 to 63 of a-z, 0-9 and -, starting and ending "
            "with a letter or digit)",
            _set("spacesBucket", "mastodon-media-example"),
        )
    if spaces_region and spaces_region not in SPACES_REGIONS:
        problems.bad(
            "spacesRegion",
            spaces_region,
            f"not a Spaces region ({', '.join(SPACES_REGIONS)})",
            _set("spacesRegion", "nyc3"),
        )
    for index, origin in enumerate(origins or ()):
        if not CORS_ORIGIN.fullmatch(origin):
            problems.bad(
                f"corsOrigins[{index}]",
                origin,
                "not * or an origin like https://example.social",
                _set_path(f"corsOrigins[{index}]", "https://example.social"),
            )
    if origins == () and bucket:
        problems.bad(
            "corsOrigins",
            [],
            "browsers need a CORS origin to load media from the bucket",
            _set_path("corsOrigins[0]", "'*'"),
        )
    if custom:
        if not _is_dns_name(custom) or custom.count(".") < 2:
            problems.bad(
                "cdnCustomDomain",
                custom,
                "not a subdomain like media.example.social",
                _set("cdnCustomDomain", "media.example.social"),
            )
        elif not bucket:
            problems.bad(
                "cdnCustomDomain",
                custom,
                "a CDN domain needs a bucket behind it",
                f"{_set('spacesBucket', '<bucket name>')}, or pulumi config rm "
                f"{PROJECT}:cdnCustomDomain",
            )
        elif not dns and not certificate:
            problems.bad(
                "cdnCustomDomain",
                custom,
                "a custom CDN domain needs a certificate: the domain managed in DigitalOcean "
                "DNS (for a Let's Encrypt certificate) or the name of a certificate already "
                "in the account",
                f"{_set('cdnDnsDomain', custom.split('.', 1)[1])}  # or: "
                f"{_set('cdnCertificateName', '<name>')} (doctl compute certificate list)",
            )
        elif dns and certificate:
            problems.bad(
                "cdnCertificateName",
                certificate,
                "set together with cdnDnsDomain: use one certificate",
                f"pulumi config rm {PROJECT}:cdnCertificateName (Let's Encrypt through "
                f"cdnDnsDomain), or pulumi config rm {PROJECT}:cdnDnsDomain",
            )
        elif dns and not (_is_dns_name(dns) and custom.endswith(f".{dns}")):
            problems.bad(
                "cdnDnsDomain",
                dns,
                f"{custom} is not inside it (Let's Encrypt validates through this zone)",
                _set("cdnDnsDomain", custom.split(".", 1)[1]),
            )
    else:
        for key, given in (("cdnDnsDomain", dns), ("cdnCertificateName", certificate)):
            if given:
                problems.bad(
                    key,
                    given,
                    "only used with cdnCustomDomain",
                    f"{_set('cdnCustomDomain', 'media.example.social')}, or pulumi config rm "
                    f"{PROJECT}:{key}",
                )
    if not bucket or None in (spaces_region, custom, dns, certificate, origins):
        return None
    return SpacesSettings(
        bucket, spaces_region or region or "nyc3", tuple(origins), custom, dns, certificate
    )


def _parse_redis(
    problems: _Problems, value, raw: Mapping[str, Any], secrets_present: Collection[str]
) -> RedisSettings | None:
    mode = _text(problems, "redisMode", value("redisMode"), "managed")
    if mode is not None and mode not in REDIS_MODES:
        problems.bad(
            "redisMode", mode, f"not one of {', '.join(REDIS_MODES)}", _set("redisMode", "managed")
        )
        return None
    size = _db_size(problems, "redisSize", value("redisSize"))
    node_count = _integer(
        problems,
        "redisNodeCount",
        value("redisNodeCount"),
        NODE_COUNTS,
        _set("redisNodeCount", 2),
    )
    if mode == "managed" and (REDIS_URL_KEY in raw or REDIS_URL_KEY in secrets_present):
        problems.add(
            REDIS_URL_KEY,
            "[secret]",
            "set, but redisMode managed makes its own Valkey",
            f"pulumi config rm {PROJECT}:{REDIS_URL_KEY}, or {_set('redisMode', 'external')}",
        )
    if mode in (None, "none") or size is None or node_count is None:
        return None
    return RedisSettings(mode, size, node_count)


def _check_unknown_keys(problems: _Problems, raw: Mapping[str, Any]) -> None:
    known = [*DEFAULTS, HOSTS_KEY]
    for key in raw:
        if key in DEFAULTS or key in (HOSTS_KEY, *ALL_SECRET_KEYS) or key in OPERATION_KEYS:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        problems.bad(str(key), raw[key], "unknown key", f"{hint}pulumi config rm {PROJECT}:{key}")


def _check_secrets_present(
    problems: _Problems,
    raw: Mapping[str, Any],
    secrets_present: Collection[str],
    needed: Collection[str] = SECRET_KEYS,
) -> None:
    for key in ALL_SECRET_KEYS:
        if key not in needed and key not in raw:
            continue
        if key in raw and key not in secrets_present:
            # Set without --secret: the value sits in clear text in Pulumi.<stack>.yaml.
            problems.add(
                key,
                "[plain text]",
                "stored in clear text in Pulumi.<stack>.yaml; it must be a secret "
                "(and, once seen in clear, a new one)",
                SECRET_FIXES[key],
            )
        elif key not in secrets_present:
            problems.add(key, "(not set)", "missing secret", SECRET_FIXES[key])


def parse_settings(raw: Mapping[str, Any], secrets_present: Collection[str]) -> Settings:
    """Settings from camelCase config values (defaults from DEFAULTS), or one ConfigError."""
    problems = _Problems()
    _check_unknown_keys(problems, raw)

    def value(key: str) -> Any:
        given = raw.get(key)
        return DEFAULTS[key] if given is None else given

    mode = _text(problems, "postgresMode", value("postgresMode"), "droplets")
    if mode is not None and mode not in MODES:
        problems.bad(
            "postgresMode", mode, f"not one of {', '.join(MODES)}", _set("postgresMode", "droplets")
        )
    valid_mode = mode if mode in MODES else None
    if valid_mode == "managed":
        for key, instead in NOT_FOR_MANAGED.items():
            # The engine passes Pulumi.yaml's defaults as if set: only a changed value is an error.
            if raw.get(key) is not None and raw[key] != DEFAULTS.get(key):
                problems.bad(
                    key,
                    raw[key],
                    f"not used in managed mode (there: {instead})",
                    f"pulumi config rm {PROJECT}:{key}",
                )

    region = _text(problems, "region", value("region"), "nyc3")
    if region is not None:
        _check_choice(problems, "region", region, REGIONS, "nyc3")
    vpc_text = _text(problems, "vpcCidr", value("vpcCidr"), DEFAULTS["vpcCidr"])
    vpc = _check_vpc(problems, vpc_text) if vpc_text is not None else None
    image = _text(problems, "image", value("image"), DEFAULTS["image"])
    if image is not None:
        _check_choice(problems, "image", image, IMAGES, DEFAULTS["image"])
    sizes = {}
    for key in ("primarySize", "replicaSize"):
        sizes[key] = _text(problems, key, value(key), DEFAULTS[key])
        if sizes[key] is not None and not SIZE_SLUG.fullmatch(sizes[key]):
            problems.bad(
                key,
                sizes[key],
                "not a droplet size slug like s-2vcpu-4gb",
                f"{_set(key, DEFAULTS[key])} (sizes: doctl compute size list)",
            )

    replica_count = _integer(
        problems, "replicaCount", value("replicaCount"), REPLICA_COUNTS, _set("replicaCount", 1)
    )
    postgres_version = _integer(
        problems,
        "postgresVersion",
        value("postgresVersion"),
        POSTGRES_VERSIONS,
        _set("postgresVersion", 18),
    )

    ssh_key_ids = _text_list(problems, "sshKeyIds", value("sshKeyIds"), "<key id>")
    if valid_mode == "droplets" and ssh_key_ids == ():
        problems.bad(
            "sshKeyIds",
            [],
            "droplets mode needs at least one DigitalOcean SSH key",
            f"{_set_path('sshKeyIds[0]', '<id>')} (ids: doctl compute ssh-key list)",
        )
    for index, key_id in enumerate(ssh_key_ids or ()):
        if not SSH_KEY_ID.fullmatch(key_id):
            problems.bad(
                f"sshKeyIds[{index}]",
                key_id,
                "not a DigitalOcean SSH key id or MD5 fingerprint",
                f"{_set_path(f'sshKeyIds[{index}]', '<id>')} "
                "(ids and fingerprints: doctl compute ssh-key list)",
            )
    ssh_user = _text(problems, "sshUser", value("sshUser"), "root")
    if ssh_user is not None and not UNIX_USER.fullmatch(ssh_user):
        problems.bad("sshUser", ssh_user, "not a valid unix user name", _set("sshUser", "root"))

    admin_cidrs = _text_list(problems, "adminCidrs", value("adminCidrs"), "203.0.113.7/32")
    if admin_cidrs is not None:
        _check_admin_cidrs(problems, admin_cidrs, valid_mode)
    sources = _text_list(
        problems, "postgresAllowedSources", value("postgresAllowedSources"), DEFAULTS["vpcCidr"]
    )
    if sources is not None:
        _check_allowed_sources(problems, sources, valid_mode, vpc)

    names = {}
    for key in ("dbName", "dbUser", "replicationUser"):
        names[key] = _text(problems, key, value(key), DEFAULTS[key])
        if names[key] is not None:
            _check_sql_name(problems, key, names[key], is_role=key != "dbName")
    if names["dbUser"] is not None and names["replicationUser"] == names["dbUser"]:
        problems.bad(
            "replicationUser",
            names["replicationUser"],
            "the same role as dbUser; replication needs a role of its own",
            _set("replicationUser", DEFAULTS["replicationUser"]),
        )

    wal = {}
    for key in ("walKeepSize", "maxSlotWalKeepSize"):
        text = _text(problems, key, value(key), DEFAULTS[key])
        wal[key] = (text, _wal_bytes(text) if text is not None else None)
        if text is not None and wal[key][1] is None:
            problems.bad(
                key, text, "not a size like 512MB (units kB, MB, GB, TB)", _set(key, DEFAULTS[key])
            )
    slot_bytes, keep_bytes = wal["maxSlotWalKeepSize"][1], wal["walKeepSize"][1]
    if slot_bytes == 0:
        problems.bad(
            "maxSlotWalKeepSize",
            wal["maxSlotWalKeepSize"][0],
            "0 would drop a replica's slot as soon as it lags",
            _set("maxSlotWalKeepSize", DEFAULTS["maxSlotWalKeepSize"]),
        )
    elif slot_bytes is not None and keep_bytes is not None and slot_bytes < keep_bytes:
        problems.bad(
            "maxSlotWalKeepSize",
            wal["maxSlotWalKeepSize"][0],
            f"smaller than walKeepSize {wal['walKeepSize'][0]}",
            _set("maxSlotWalKeepSize", wal["walKeepSize"][0]) + " (or larger)",
        )

    hosts = _parse_hosts(problems, raw.get(HOSTS_KEY), valid_mode, replica_count)
    warnings: list[str] = []
    managed = _parse_managed(problems, value, valid_mode, region, warnings)
    spaces = _parse_spaces(problems, value, region)
    redis = _parse_redis(problems, value, raw, secrets_present)
    needs_firewall = valid_mode == "managed" or (redis is not None and redis.mode == "managed")
    app_sources = _parse_app_sources(problems, value, needs_firewall)
    _check_secrets_present(
        problems,
        raw,
        secrets_present,
        required_secrets(valid_mode, redis.mode if redis else "none"),
    )

    if problems.lines:
        raise ConfigError("\n".join(problems.lines))
    return Settings(
        mode=mode,
        region=region,
        vpc_cidr=str(vpc),
        image=image,
        primary_size=sizes["primarySize"],
        replica_size=sizes["replicaSize"],
        replica_count=replica_count,
        postgres_version=postgres_version,
        ssh_key_ids=ssh_key_ids,
        ssh_user=ssh_user,
        admin_cidrs=admin_cidrs,
        postgres_allowed_sources=sources or (str(vpc),),
        db_name=names["dbName"],
        db_user=names["dbUser"],
        replication_user=names["replicationUser"],
        wal_keep_size=wal["walKeepSize"][0],
        max_slot_wal_keep_size=wal["maxSlotWalKeepSize"][0],
        hosts=hosts,
        managed=managed,
        spaces=spaces,
        redis=redis,
        app_sources=app_sources,
        warnings=tuple(warnings),
    )


def _openssh_cipher(key_text: str) -> str | None:
    """The cipher of an "OPENSSH PRIVATE KEY" block ("none" when it has no passphrase)."""
    match = re.search(
        r"-----BEGIN OPENSSH PRIVATE KEY-----(.*?)-----END OPENSSH PRIVATE KEY-----",
        key_text,
        re.S,
    )
    if not match:
        return None
    try:
        blob = base64.b64decode("".join(match.group(1).split()))
    except (binascii.Error, ValueError):
        return None
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic):
        return None
    length = int.from_bytes(blob[len(magic) : len(magic) + 4], "big")
    return blob[len(magic) + 4 : len(magic) + 4 + length].decode("ascii", "replace")


def _redis_url_problems(value: str) -> list[str]:
    """rediss:// only: Mastodon sends the Redis password and every job over this connection."""
    from urllib.parse import urlsplit

    problems = _Problems()
    fix = SECRET_FIXES[REDIS_URL_KEY]
    if any(char.isspace() or not char.isprintable() for char in value):
        problems.add(REDIS_URL_KEY, "[secret]", "contains whitespace or control characters", fix)
        return problems.lines
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError:
        problems.add(REDIS_URL_KEY, "[secret]", "not a URL", fix)
        return problems.lines
    if url.scheme == "redis":
        problems.add(
            REDIS_URL_KEY,
            "[secret]",
            "redis:// sends the password and all data in clear; this stack emits TLS only "
            "(rediss://, with REDIS_DRIVER=ruby)",
            fix,
        )
    elif url.scheme != "rediss" or not url.hostname:
        problems.add(REDIS_URL_KEY, "[secret]", "not a rediss://<host>:<port> URL", fix)
    elif port is None:
        problems.add(REDIS_URL_KEY, "[secret]", "has no port (DigitalOcean: 25061)", fix)
    return problems.lines


def secret_problems(name: str, value: str) -> list[str]:
    """Problems of a decrypted secret; the lines name the key and never contain the value."""
    problems = _Problems()
    shown = "[secret]"
    if name in ("replicationPassword", "dbPassword"):
        if len(value) < MIN_PASSWORD_LENGTH:
            problems.add(
                name, shown, f"shorter than {MIN_PASSWORD_LENGTH} characters", SECRET_FIXES[name]
            )
        if any(char.isspace() or not char.isprintable() for char in value):
            problems.add(
                name, shown, "contains whitespace or control characters", SECRET_FIXES[name]
            )
    elif name == REDIS_URL_KEY:
        problems.lines += _redis_url_problems(value)
    elif name == "sshPrivateKey":
        fix = SECRET_FIXES[name]
        if "-----BEGIN" not in value or "PRIVATE KEY-----" not in value:
            hint = (
                " (this looks like a public key: use the file without .pub)"
                if (value.lstrip().startswith(("ssh-", "ecdsa-", "sk-")))
                else ""
            )
            problems.add(
                name,
                shown,
                f"not a private key (no -----BEGIN ... PRIVATE KEY----- block){hint}",
                fix,
            )
        elif "ENCRYPTED" in value or _openssh_cipher(value) not in (None, "none"):
            # The remote commands get no passphrase, so an encrypted key cannot log in.
            problems.add(
                name,
                shown,
                "the key is protected by a passphrase",
                "use a key without a passphrase for this stack: ssh-keygen -t ed25519 "
                "-N '' -f ~/.ssh/mastodon-data && cat ~/.ssh/mastodon-data | "
                f"pulumi config set --secret {PROJECT}:sshPrivateKey",
            )
    return problems.lines
