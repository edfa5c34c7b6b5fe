"""Stack outputs from plain values: host addresses per role, `mastodon_env` and the status
reports. Pure; the Pulumi program applies these inside `Output.all`, the direct runner calls
`stack_outputs`."""

from __future__ import annotations

import json

from components.env import mastodon_env


def parse_report(stdout: str) -> dict:
    """The JSON summary a host script prints as its last stdout line."""
    lines = [line for line in (stdout or "").splitlines() if line.strip()]
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {"unparsed": lines[-1][:200]}


def _address(node) -> dict:
    return {
        "name": node.name,
        "public_address": node.public_address,
        "private_address": node.private_address,
    }


def host_outputs(nodes: list, status_stdout: dict[str, str]) -> dict:
    """Non-secret outputs: where each role lives and what its status report said."""
    return {
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


def stack_outputs(settings, nodes: list, db_password: str, status_stdout: dict[str, str]) -> dict:
    return {
        **host_outputs(nodes, status_stdout),
        "mastodon_env": env_output(settings, nodes, db_password),
    }
