"""Stack outputs from plain values: host addresses per role, `mastodon_env` and the status
reports. Pure; the Pulumi program applies it inside `Output.all`, the direct runner calls it."""
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


def stack_outputs(settings, nodes: list, db_password: str, status_stdout: dict[str, str]) -> dict:
    primary = next(n for n in nodes if n.role == "primary")
    replicas = [n for n in nodes if n.role == "replica"]
    address = lambda n: {"name": n.name, "public_address": n.public_address,  # noqa: E731
                         "private_address": n.private_address}
    first = replicas[0] if replicas else None
    return {
        "primary": address(primary),
        "replicas": [address(r) for r in replicas],
        "mastodon_env": mastodon_env(
            db_host=primary.private_address, db_port=settings.port, db_name=settings.db_name,
            db_user=settings.db_user, db_password=db_password,
            replica_host=first.private_address if first else None,
            replica_port=settings.port if first else None,
        ),
        "replication": {name: parse_report(out) for name, out in status_stdout.items()},
    }
