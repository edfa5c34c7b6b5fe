"""Stack outputs from plain values: host addresses per role, `mastodon_env` and the status
reports. Pure; the Pulumi program applies these inside `Output.all`, the direct runner calls
`stack_outputs`."""

from __future__ import annotations

from components.env import mastodon_env
from components.plan import parse_report


def _address(node) -> dict:
    return {
        "name": node.name,
        "public_address": node.public_address,
        "private_address": node.private_address,
    }


def host_outputs(nodes: list, status_stdout: dict[str, str], ca_cert: str = "") -> dict:
    """Non-secret outputs: where each role lives, what its status report said, and the CA that
    issued the primary's certificate (for sslmode=verify-full and NODE_EXTRA_CA_CERTS)."""
    return {
        "postgres_ca_cert": ca_cert,
        "primary": next(_address(n) for n in nodes if n.role == "primary"),
        "replicas": [_address(n) for n in nodes if n.role == "replica"],
        "replication": {name: parse_report(out) for name, out in status_stdout.items()},
    }


def env_output(settings, nodes: list, db_password: str) -> dict[str, str]:
    """Mastodon's database variables; the first replica serves Mastodon's read replica."""
    primary = next(n for n in nodes if n.role == "primary")
    replica = next((n for n in nodes if n.role == "replica"), None)
    return mastodon_env(
        db_host=primary.private_address,
        db_port=settings.port,
        db_name=settings.db_name,
        db_user=settings.db_user,
        db_password=db_password,
        replica_host=replica.private_address if replica else None,
        replica_port=settings.port if replica else None,
    )


def stack_outputs(
    settings, nodes: list, db_password: str, status_stdout: dict[str, str], ca_cert: str = ""
) -> dict:
    return {
        **host_outputs(nodes, status_stdout, ca_cert),
        "mastodon_env": env_output(settings, nodes, db_password),
    }
