"""Stack outputs from resolved values. Pure; the program applies these inside `Output.all`.

PostgreSQL, whatever runs it, is described by one plain dict of endpoints (no secret in it):

    direct_host, direct_port   PostgreSQL itself (the primary; migrations go here)
    db_name, user              Mastodon's database and role
    pool_name, pool_host, pool_port, pool_size   the pgBouncer pool, or None (no pool)
    replica_host, replica_port the read replica Mastodon uses, or None
    replica_pool_port          the pool in front of that replica (PgBouncer on it), or None
    replica_pool_name          that pool's database name (REPLICA_DB_NAME), or None

From it come the `postgres` output (the same keys in every mode), `mastodon_env` and
`migration_env`.
"""

from __future__ import annotations

from collections.abc import Sequence

from mastodon_data.config import PoolSettings
from mastodon_data.config.pooling import read_pool_name
from mastodon_data.env import ObjectStorage, mastodon_env, migration_env

POOL_MODE = "transaction"
ENDPOINT_KEYS = (
    "direct_host",
    "direct_port",
    "db_name",
    "user",
    "pool_name",
    "pool_host",
    "pool_port",
    "pool_size",
    "replica_host",
    "replica_port",
    "replica_pool_port",
    "replica_pool_name",
)


def server_endpoints(
    primary_address: str,
    replica_address: str | None,
    port: int,
    db_name: str,
    user: str,
    pool: PoolSettings | None = None,
) -> dict:
    """The endpoints of PostgreSQL on the stack's own servers; the first replica serves
    Mastodon's reads. With `pool`, PgBouncer on each host: the pool with the database's name
    writes on the primary, the read pool (read_pool_name) reads on that host."""
    endpoints = {
        **dict.fromkeys(ENDPOINT_KEYS),
        "direct_host": primary_address,
        "direct_port": port,
        "db_name": db_name,
        "user": user,
        "replica_host": replica_address,
        "replica_port": port if replica_address else None,
    }
    if pool:
        endpoints |= {
            "pool_name": db_name,
            "pool_host": primary_address,
            "pool_port": pool.pgbouncer_port,
            "pool_size": pool.size,
            "replica_pool_port": pool.pgbouncer_port if replica_address else None,
            "replica_pool_name": read_pool_name(db_name) if replica_address else None,
        }
    return endpoints


def postgres_output(endpoints: dict) -> dict:
    """Where Mastodon's database lives, for pipelines and humans (no password)."""
    pool = None
    if endpoints["pool_host"]:
        pool = {
            "name": endpoints["pool_name"],
            "private_host": endpoints["pool_host"],
            "port": endpoints["pool_port"],
            "size": endpoints["pool_size"],
            "mode": POOL_MODE,
        }
    replica = None
    if endpoints["replica_host"]:
        replica = {
            "private_host": endpoints["replica_host"],
            "port": endpoints["replica_port"],
            "pool_port": endpoints.get("replica_pool_port"),
        }
    return {
        "private_host": endpoints["direct_host"],
        "port": endpoints["direct_port"],
        "database": endpoints["db_name"],
        "user": endpoints["user"],
        "pool": pool,
        "replica": replica,
    }


def env_output(
    endpoints: dict,
    db_password: str,
    redis: str | None = None,
    storage: dict | None = None,
    cache_redis: str | None = None,
) -> dict[str, str]:
    """Mastodon's variables: through the pool when there is one (DB_NAME is then the pool's
    name); the read replica through its own pool when it has one (PgBouncer on the stack's
    servers), else directly (managed mode's read-only node)."""
    pooled = bool(endpoints["pool_host"])
    replica_pooled = bool(endpoints.get("replica_pool_port"))
    via = "pool" if pooled else "direct"
    return mastodon_env(
        db_host=endpoints[f"{via}_host"],
        db_port=endpoints[f"{via}_port"],
        db_name=endpoints["pool_name"] if pooled else endpoints["db_name"],
        db_user=endpoints["user"],
        db_password=db_password,
        replica_host=endpoints["replica_host"],
        replica_port=endpoints["replica_pool_port" if replica_pooled else "replica_port"],
        replica_db_name=endpoints["replica_pool_name" if replica_pooled else "db_name"],
        through_pool=pooled,
        replica_through_pool=replica_pooled,
        redis=redis,
        cache_redis=cache_redis,
        object_storage=ObjectStorage(**storage) if storage else None,
    )


def migration_output(endpoints: dict) -> dict[str, str]:
    """PostgreSQL itself, past any pool (without one: the same primary as mastodon_env)."""
    return migration_env(
        db_host=endpoints["direct_host"],
        db_port=endpoints["direct_port"],
        db_name=endpoints["db_name"],
    )


def server_output(name: str, public_address: str, private_address: str) -> dict:
    return {"name": name, "public_address": public_address, "private_address": private_address}


def servers_output(rows: Sequence[Sequence[str]]) -> dict:
    """`primary` and `replicas` from (name, role, public address, private address) rows."""
    return {
        "primary": next(server_output(n, pub, priv) for n, r, pub, priv in rows if r == "primary"),
        "replicas": [server_output(n, pub, priv) for n, r, pub, priv in rows if r == "replica"],
    }


def read_endpoint_output(address: str, port: int, health_port: int) -> dict:
    """Droplets mode: the load balancer over the replicas (REPLICA_DB_HOST) and what it checks."""
    return {"private_host": address, "port": port, "health_port": health_port, "path": "/replica"}


HAPROXY_HEAD = """\
# The read endpoint over the replicas of mastodon-data, for HAProxy (Debian's haproxy 2.6) on
# each Mastodon app server: Mastodon's REPLICA_DB_HOST=127.0.0.1, REPLICA_DB_PORT={port}.
# A server gets new connections while GET /replica on its health port answers 200 (a
# streaming replica within the lag bounds); with none, reads go to the primary (backup).
global
    maxconn 4096

defaults
    mode tcp
    timeout connect 3s
    timeout client 1h
    timeout server 1h

listen mastodon-replicas
    bind 127.0.0.1:{port}
    balance roundrobin
    option httpchk GET /replica
    http-check expect status 200
    default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions
"""


def haproxy_read_config(servers: Sequence, port: int, health_port: int) -> str:
    """Hosts mode: HAProxy's configuration of the read endpoint over `servers` (Host records,
    plain addresses). Every server is checked (only replicas answer 200, so a failover needs
    no change); the primary, unchecked, is the backup that serves reads when no replica can."""
    lines = [HAPROXY_HEAD.format(port=port)]
    for host in servers:
        lines.append(
            f"    server {host.name} {host.private_address}:{port} check port {health_port}\n"
        )
    primary = next(h for h in servers if h.role == "primary")
    lines.append(f"    server {primary.name}-primary {primary.private_address}:{port} backup\n")
    return "".join(lines)
