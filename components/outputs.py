"""Stack outputs from plain values: host addresses per role, `mastodon_env`, `migration_env`
and the status reports; for managed mode the same from the managed endpoints. Pure; the Pulumi
program applies these inside `Output.all`, the direct runner calls `stack_outputs`."""

from __future__ import annotations

from components.env import ObjectStorage, mastodon_env, migration_env
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


def _storage(storage: dict | None) -> ObjectStorage | None:
    return ObjectStorage(**storage) if storage else None


def env_output(
    settings,
    nodes: list,
    db_password: str,
    redis: str | None = None,
    storage: dict | None = None,
) -> dict[str, str]:
    """Mastodon's variables; the first replica serves Mastodon's read replica."""
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
        redis=redis,
        object_storage=_storage(storage),
    )


def migration_output(settings, nodes: list) -> dict[str, str]:
    """No pool in droplets/hosts mode: the same primary as mastodon_env (one pipeline for all)."""
    primary = next(n for n in nodes if n.role == "primary")
    return migration_env(
        db_host=primary.private_address, db_port=settings.port, db_name=settings.db_name
    )


def managed_env_output(
    endpoints: dict, db_password: str, redis: str | None = None, storage: dict | None = None
) -> dict[str, str]:
    """Through the pool (DB_NAME is the pool's name); the read-only node directly."""
    return mastodon_env(
        db_host=endpoints["pool_host"],
        db_port=endpoints["pool_port"],
        db_name=endpoints["pool_name"],
        db_user=endpoints["user"],
        db_password=db_password,
        replica_host=endpoints["replica_host"],
        replica_port=endpoints["replica_port"],
        replica_db_name=endpoints["db_name"],
        through_pool=True,
        redis=redis,
        object_storage=_storage(storage),
    )


def managed_migration_output(endpoints: dict) -> dict[str, str]:
    return migration_env(
        db_host=endpoints["direct_host"],
        db_port=endpoints["direct_port"],
        db_name=endpoints["db_name"],
    )


def managed_postgres_output(endpoints: dict) -> dict:
    """Where the managed database lives, for humans (no password)."""
    replica = None
    if endpoints["replica_host"]:
        replica = {"private_host": endpoints["replica_host"], "port": endpoints["replica_port"]}
    return {
        "private_host": endpoints["direct_host"],
        "port": endpoints["direct_port"],
        "database": endpoints["db_name"],
        "user": endpoints["user"],
        "pool": {
            "name": endpoints["pool_name"],
            "private_host": endpoints["pool_host"],
            "port": endpoints["pool_port"],
            "size": endpoints["pool_size"],
            "mode": "transaction",
        },
        "replica": replica,
    }


def stack_outputs(
    settings, nodes: list, db_password: str, status_stdout: dict[str, str], ca_cert: str = ""
) -> dict:
    return {
        **host_outputs(nodes, status_stdout, ca_cert),
        "mastodon_env": env_output(settings, nodes, db_password),
        "migration_env": migration_output(settings, nodes),
    }
