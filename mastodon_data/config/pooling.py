"""Connection pooling on the stack's own servers (droplets, hosts): PgBouncer's transaction pools,
sized from the threads Mastodon runs, and PostgreSQL's max_connections they must fit in."""

from __future__ import annotations

from typing import Any

from mastodon_data.config.checks import Field, Validation, set_command
from mastodon_data.config.records import POSTGRES_PORT, PoolSettings

# Connections outside the pool: `rails db:migrate` (migration_env), the replication check, the
# status steps, an operator's psql. superuser_reserved_connections is PostgreSQL's default.
DIRECT_CONNECTIONS = 10
SUPERUSER_RESERVED = 3
# PgBouncer's client slots cost about 2 kB each: at least this many, or twice the threads (a
# rolling restart runs the old and the new processes side by side).
MIN_CLIENT_SLOTS = 1000
THREAD_KEYS = ("pumaProcesses", "pumaThreads", "sidekiqThreads", "streamingDbPool")

FIELDS = (
    Field("maxConnections", example=200, allowed=range(20, 10001)),
    Field("pgbouncer", example="false"),
    Field("pgbouncerPort", allowed=range(1024, 65536)),
    Field("pumaProcesses", allowed=range(1, 1001)),
    Field("pumaThreads", allowed=range(1, 101)),
    Field("sidekiqThreads", allowed=range(1, 10001)),
    Field("streamingDbPool", allowed=range(1, 10001)),
)


def pool_size(puma_processes: int, puma_threads: int, sidekiq: int, streaming: int) -> int:
    """Backends one pool may open: every Mastodon thread in a transaction at once (Mastodon's
    scaling guide: connections = Puma processes x threads + Sidekiq threads + streaming DB_POOL)."""
    return puma_processes * puma_threads + sidekiq + streaming


def parse_pooling(v: Validation, mode: str | None) -> dict[str, Any]:
    """`max_connections` and `pool` (PoolSettings, or None when pgbouncer is off) of the
    ReplicationSettings record; problems go to `v`."""
    values = v.read(FIELDS)
    port = values["pgbouncerPort"]
    if port == POSTGRES_PORT:
        v.bad("pgbouncerPort", port, "PostgreSQL's own port", set_command("pgbouncerPort", 6432))
    threads = [values[key] for key in THREAD_KEYS]
    size = pool_size(*threads) if None not in threads else None
    if mode != "managed" and size is not None and values["maxConnections"] is not None:
        check_max_connections(v, threads, size, values["maxConnections"])
    pool = None
    if values["pgbouncer"] and size is not None and v.ok("pgbouncerPort"):
        pool = PoolSettings(port, size, max(MIN_CLIENT_SLOTS, 2 * size))
    return {"max_connections": values["maxConnections"], "pool": pool}


def check_max_connections(v: Validation, threads: list[int], size: int, limit: int) -> None:
    """Every thread's connection (through a pool or not) and the direct ones fit in
    max_connections, on the primary and on every replica (the same value)."""
    needed = size + DIRECT_CONNECTIONS + SUPERUSER_RESERVED
    if needed <= limit:
        return
    p, t, s, d = threads
    v.bad(
        "maxConnections",
        limit,
        f"too small for Mastodon's connections: pumaProcesses x pumaThreads + sidekiqThreads + "
        f"streamingDbPool = {p} x {t} + {s} + {d} = {size} (the pool of each host), + "
        f"{DIRECT_CONNECTIONS} direct (migrations, checks) + {SUPERUSER_RESERVED} "
        f"superuser_reserved_connections = {needed}",
        f"{set_command('maxConnections', needed)} (or lower {', '.join(THREAD_KEYS)})",
    )
