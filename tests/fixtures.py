"""Example stacks for the tests: settings as they stand in Pulumi.<stack>.yaml (keys without the
project prefix; the ones lab/bad_inputs_table.py shares come from lab/example_stacks.py), and
secrets to go with them; the committed stack files read the same way.

Import as `from tests.fixtures import ...`, from the repository root (pytest's pythonpath, or
`python -m` run there)."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import yaml

from lab.example_stacks import (  # noqa: F401 - the tests' examples too
    DROPLETS,
    MANAGED,
    SPACES,
    host_entries,
    hosts_stack,
    with_host,
)
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

# What host/replica.py needs to build its connection string (its other parameters aside).
REPLICA_PARAMS = {
    "name": "db2",
    "primary_address": "10.0.0.1",
    "primary_port": 5432,
    "replication_user": "replicator",
    "replication_timeout": "10s",
}
HOSTS = hosts_stack()


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


def exporter_builds(directory: Path, content: bytes = b"build") -> str:
    """An exportersHome laid out as `make exporters` leaves it (<name>-v<version>/<name>), each
    file holding `content` and its name; returns its path (the setting's value)."""
    from mastodon_data.monitoring import builds

    for name in builds.PINNED:
        path = builds.binary_path(directory, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content + name.encode())
    return str(directory)
