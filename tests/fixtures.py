"""Example stacks for the tests and lab/bad_inputs_table.py: settings as they stand in
Pulumi.<stack>.yaml (keys without the project prefix), and secrets to go with them; the committed
stack files read the same way.

Import as `from tests.fixtures import ...`, from the repository root (pytest's pythonpath, or
`python -m` run there)."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import yaml

from mastodon_data.config import PROJECT

ROOT = Path(__file__).resolve().parents[1]
# The operator's command as installed into the venv that runs the tests (`make`: pip install -e .).
COMMAND = str(Path(sys.executable).parent / "mastodon-data")

# Decrypted secrets of a droplets or hosts stack (managed PostgreSQL needs none of them).
SECRETS = {
    "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAtestkeymaterial\n"
    "-----END OPENSSH PRIVATE KEY-----\n",
    "replicationPassword": "replication-secret-0123456789",
    "dbPassword": "database-secret-0123456789",
}

DROPLETS = {
    "postgresMode": "droplets",
    "sshKeyIds": ["12345"],
    "adminCidrs": ["198.51.100.7/32"],
}
MANAGED = {"postgresMode": "managed", "appTag": "mastodon-app"}
# What host/replica.py needs to build its connection string (its other parameters aside).
REPLICA_PARAMS = {
    "name": "db2",
    "primary_address": "10.0.0.1",
    "primary_port": 5432,
    "replication_user": "replicator",
    "replication_timeout": "10s",
}
SPACES = {"spacesBucket": "mastodon-media-test", "spacesRegion": "nyc3"}  # add to any mode


def host_entries(count: int, first_address: int = 1) -> list[dict]:
    """db1, db2, ...: public 192.0.2.<n>, private 10.0.0.<n>, n counting from first_address."""
    return [
        {
            "name": f"db{i + 1}",
            "publicAddress": f"192.0.2.{first_address + i}",
            "privateAddress": f"10.0.0.{first_address + i}",
        }
        for i in range(count)
    ]


def hosts_stack(count: int = 2, replicas: int = 1, first_address: int = 1) -> dict:
    """A hosts-mode stack of `count` hosts: the first the primary, then `replicas` replicas."""
    return {
        "postgresMode": "hosts",
        "replicaCount": replicas,
        "postgresAllowedSources": ["10.0.0.0/24"],
        "hosts": host_entries(count, first_address),
    }


HOSTS = hosts_stack()


def with_host(stack: dict, index: int, **changes) -> dict:
    """`stack` with the changes made to its host `index` (a change to None removes the key)."""
    hosts = [dict(host) for host in stack["hosts"]]
    hosts[index].update(changes)
    for key, value in changes.items():
        if value is None:
            del hosts[index][key]
    return {**stack, "hosts": hosts}


def ssh_string(data: bytes) -> bytes:
    """One length-prefixed field of an SSH key blob."""
    return len(data).to_bytes(4, "big") + data


HOST_KEY = (
    "ssh-ed25519 "
    + base64.b64encode(ssh_string(b"ssh-ed25519") + ssh_string(bytes(range(32)))).decode()
)
# Hosts mode with every kind of entry: a pinned host key with a comment, a DNS name, a user and
# a port of its own (as text), and a spare beyond replicaCount.
VARIED_HOSTS = {
    "postgresMode": "hosts",
    "replicaCount": 1,
    "postgresAllowedSources": ["10.0.0.0/24"],
    "hosts": [
        {
            "name": "db-a",
            "publicAddress": "203.0.113.10",
            "privateAddress": "10.0.0.10",
            "hostKey": HOST_KEY + " root@db-a",
        },
        {
            "publicAddress": "db2.example.net",
            "privateAddress": "10.0.0.11",
            "sshUser": "admin",
            "sshPort": "2222",
        },
        {"name": "spare", "publicAddress": "203.0.113.12", "privateAddress": "10.0.0.12"},
    ],
}


def stack_file(stack: str) -> tuple[dict, set[str]]:
    """A committed `Pulumi.<stack>.yaml`: (its plain settings, the names of its secrets)."""
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    raw, secrets = {}, set()
    for key, value in (document.get("config") or {}).items():
        namespace, _, name = key.partition(":")
        if namespace != PROJECT:
            continue
        if isinstance(value, dict) and "secure" in value:
            secrets.add(name)
        else:
            raw[name] = value
    return raw, secrets
