"""Hosts mode: the existing servers, each an entry of the `hosts` list (Pulumi.yaml cannot type
a list of objects, so every entry is checked here)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from mastodon_data.config.checks import (
    Field,
    Validation,
    did_you_mean,
    is_address,
    is_dns_name,
    set_command,
    set_path_command,
)
from mastodon_data.config.project import PROJECT
from mastodon_data.config.records import Host
from mastodon_data.config.topology import UNIX_USER

HOSTS_KEY = "hosts"
HOST_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
HOST_ENTRY_KEYS = (
    "name",
    "publicAddress",
    "privateAddress",
    "sshUser",
    "sshPort",
    "hostKey",
    "dataDevice",
)
# A block device by a path that stays the same across reboots (/dev/disk/by-id/... best).
STABLE_EXAMPLE = "/dev/disk/by-id/<id>"
DATA_DEVICE = re.compile(r"/dev/(?!.*\.\.)[A-Za-z0-9._:+@/-]+")
SSH_PORTS = range(1, 65536)
# An entry's text fields: the same message for a wrong type and a refused value; an example
# may name the entry's {index} and {octet} (10 + index, for a private address).
ENTRY_FIELDS = (
    Field("name", "db-{index}", pattern=HOST_NAME, what="must match ^[a-z0-9][a-z0-9-]{0,62}$"),
    Field(
        "publicAddress",
        "203.0.113.10",
        pattern=lambda text: is_address(text) or is_dns_name(text),
        what="not an IP address or DNS name",
    ),
    Field("privateAddress", "10.0.0.{octet}", pattern=is_address, what="not an IP address"),
    Field("sshUser", "root", pattern=UNIX_USER, what="not a valid unix user name"),
)
ENTRY_DEFAULTS = {"name": "host{index}", "sshUser": "root"}  # the others are required
# Modes without a hosts list: why one is refused there, and the fix before `pulumi config rm`.
NOT_HOSTS_MODE = {
    "droplets": ("droplets mode creates its own", f"{set_command('postgresMode', 'hosts')}, or "),
    "managed": ("managed mode runs no servers of its own", ""),
}


def host_key_problem(text: str) -> str | None:
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


def parse_hosts(v: Validation, mode: str | None, replica_count: int | None) -> tuple[Host, ...]:
    value = v.raw.get(HOSTS_KEY)
    entries = [] if value is None else value
    if not isinstance(entries, list | tuple):
        v.bad(
            HOSTS_KEY,
            value,
            "not a list of host objects",
            set_path_command(f"{HOSTS_KEY}[0].publicAddress", "203.0.113.10"),
        )
        return ()
    if mode in NOT_HOSTS_MODE:
        if entries:
            why, fix = NOT_HOSTS_MODE[mode]
            v.add(
                HOSTS_KEY,
                f"<{len(entries)} entries>",
                f"hosts are only used in hosts mode; {why}",
                f"{fix}pulumi config rm {PROJECT}:hosts",
            )
        return ()
    if mode != "hosts":
        return ()
    if not entries:
        v.bad(
            HOSTS_KEY,
            [],
            "hosts mode needs at least one host (the primary)",
            f"{set_path_command('hosts[0].publicAddress', '203.0.113.10')} && "
            f"{set_path_command('hosts[0].privateAddress', '10.0.0.10')}",
        )
        return ()
    parsed = [
        (index, host)
        for index, entry in enumerate(entries)
        if (host := parse_host(v, index, entry, host_role(index, replica_count))) is not None
    ]
    check_duplicates(v, parsed)
    check_host_count(v, len(entries), replica_count)
    return tuple(host for _, host in parsed)


def host_role(index: int, replica_count: int | None) -> str:
    """The first host is the primary, the next `replica_count` are replicas, the rest spares."""
    if index == 0:
        return "primary"
    return "replica" if index <= (replica_count or 0) else "spare"


def parse_host(
    v: Validation, index: int, entry: Any, role: str, key: str = HOSTS_KEY
) -> Host | None:
    """Entry `index` of the list `key` (hosts, or upgradeFrom.hosts)."""
    prefix = f"{key}[{index}]"
    if not isinstance(entry, Mapping):
        v.bad(
            prefix,
            entry,
            "not an object with publicAddress and privateAddress",
            set_path_command(f"{prefix}.publicAddress", "203.0.113.10"),
        )
        return None
    before = len(v.lines)
    check_entry_keys(v, prefix, entry, HOST_ENTRY_KEYS)
    texts = {field.key: read_entry_text(v, prefix, index, entry, field) for field in ENTRY_FIELDS}
    ssh_port = v.integer(
        f"{prefix}.sshPort",
        entry.get("sshPort", 22),
        SSH_PORTS,
        set_path_command(f"{prefix}.sshPort", 22),
    )
    host_key = entry.get("hostKey")
    check_host_key(v, prefix, host_key)
    data_device = entry.get("dataDevice")
    check_data_device(v, prefix, data_device)
    if len(v.lines) > before:
        return None
    # Kept as "<type> <base64>": the form both known_hosts and the SSH libraries read.
    known_key = " ".join(host_key.split()[:2]) if host_key else None
    return Host(
        texts["name"],
        role,
        texts["publicAddress"],
        texts["privateAddress"],
        texts["sshUser"],
        ssh_port,
        known_key,
        data_device,
    )


def check_entry_keys(v: Validation, prefix: str, entry: Mapping, known: tuple[str, ...]) -> None:
    """Each key of the object `prefix` that is not among `known`, with the closest one."""
    for key in entry:
        if key not in known:
            v.bad(
                f"{prefix}.{key}",
                entry[key],
                f"unknown key (known: {', '.join(known)})",
                f"{did_you_mean(key, known)}pulumi config rm --path '{PROJECT}:{prefix}.{key}'",
            )


def check_host_key(v: Validation, prefix: str, host_key: Any) -> None:
    why = host_key_problem(host_key) if isinstance(host_key, str) else "not a string"
    if host_key is not None and why:
        v.bad(
            f"{prefix}.hostKey",
            host_key,
            why,
            "ssh-keyscan -p <sshPort> -t ed25519 <publicAddress> | cut -d' ' -f2- | "
            f"pulumi config set --path '{PROJECT}:{prefix}.hostKey'",
        )


def check_data_device(v: Validation, prefix: str, data_device: Any) -> None:
    if data_device is not None and (
        not isinstance(data_device, str) or not DATA_DEVICE.fullmatch(data_device)
    ):
        v.bad(
            f"{prefix}.dataDevice",
            data_device,
            "not a block device path under /dev (a stable one: /dev/disk/by-id/...)",
            set_path_command(f"{prefix}.dataDevice", STABLE_EXAMPLE)
            + " (names: ls -l /dev/disk/by-id), or "
            + f"pulumi config rm --path '{PROJECT}:{prefix}.dataDevice'",
        )


def read_entry_text(v: Validation, prefix: str, index: int, entry: Mapping, field: Field) -> Any:
    names = {"index": index, "octet": 10 + index}
    default = ENTRY_DEFAULTS.get(field.key)
    text = entry.get(field.key, None if default is None else default.format(**names))
    if not isinstance(text, str) or field.problem(text):
        path = f"{prefix}.{field.key}"
        what = "missing" if text is None and default is None else field.what
        v.bad(path, text, what, field.fix(field.example.format(**names), path))
    return text


def check_duplicates(v: Validation, hosts: list[tuple[int, Host]], key: str = HOSTS_KEY) -> None:
    """No two entries of the list `key` share a name or an address."""
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
                v.bad(
                    f"{key}[{index}].{field}",
                    shown,
                    f"same {label} as {key}[{first}]",
                    f"give each host its own {label}, or remove the duplicate entry",
                )


def check_host_count(v: Validation, count: int, replica_count: int | None) -> None:
    needed = 1 + (replica_count or 0)
    if replica_count is not None and count < needed:
        v.add(
            HOSTS_KEY,
            f"<{count} entries>",
            f"replicaCount {replica_count} needs {needed} hosts (a primary and "
            f"{replica_count} replicas)",
            f"add hosts ({set_path_command(f'hosts[{count}].publicAddress', '<address>')}"
            f" ...) or lower replicaCount ({set_command('replicaCount', count - 1)})",
        )
