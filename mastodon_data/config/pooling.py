"""The connection budget: Mastodon's clients against every limit on their way to PostgreSQL.

Clients = Puma processes x threads + Sidekiq threads + streaming DB_POOL (Mastodon's scaling
guide). On the stack's own servers (droplets, hosts) they pass PgBouncer's max_client_conn, its
open-file limit and PostgreSQL's max_connections; in managed mode DigitalOcean's pool, within
the cluster's connection limit (mastodon_data/config/managed.py). Each limit checked here is the
one the host scripts write (PoolSettings -> PoolerParams -> pgbouncer.ini and LimitNOFILE;
maxConnections -> postgresql.conf), so what passed the preview is what runs.
"""

from __future__ import annotations

from typing import Any

from mastodon_data.config.checks import Field, Validation, set_command
from mastodon_data.config.records import POSTGRES_PORT, PoolSettings

# Connections outside the pool: `rails db:migrate` (migration_env), the replication check, the
# status steps, an operator's psql. superuser_reserved_connections is PostgreSQL's default.
DIRECT_CONNECTIONS = 10
SUPERUSER_RESERVED = 3
# A rolling restart runs the old and the new Mastodon processes side by side.
RESTART_FACTOR = 2
# PgBouncer holds a descriptor per client and per server connection; these are its own (the
# listening sockets, the log, the pid file, DNS), with room to spare.
PGBOUNCER_OWN_FILES = 64
THREAD_KEYS = ("pumaProcesses", "pumaThreads", "sidekiqThreads", "streamingDbPool")
CLIENT_FIELDS = (
    Field("pumaProcesses", allowed=range(1, 1001)),
    Field("pumaThreads", allowed=range(1, 101)),
    Field("sidekiqThreads", allowed=range(1, 10001)),
    Field("streamingDbPool", allowed=range(1, 10001)),
)
POOL_FIELDS = (
    Field("maxConnections", example=200, allowed=range(20, 10001)),
    Field("pgbouncer", example="false"),
    Field("pgbouncerPort", allowed=range(1024, 65536)),
    Field("pgbouncerMaxClientConn", allowed=range(100, 100001)),
    Field("pgbouncerOpenFiles", allowed=range(1024, 1048577)),
)
FIELDS = (*CLIENT_FIELDS, *POOL_FIELDS)


def read_pool_name(db_name: str) -> str:
    """The second database of every server's PgBouncer (REPLICA_DB_NAME): reads on that
    server's own PostgreSQL, while the pool named DB_NAME writes on the primary."""
    return f"{db_name}_replica"


def mastodon_clients(v: Validation) -> tuple[int, str] | None:
    """(Mastodon's database connections, the sum written out), or None when a thread setting
    is wrong (reported to `v`)."""
    values = v.read(CLIENT_FIELDS)
    if None in values.values():
        return None
    p, t, s, d = (values[key] for key in THREAD_KEYS)
    total = p * t + s + d
    return total, (
        f"pumaProcesses x pumaThreads + sidekiqThreads + streamingDbPool = "
        f"{p} x {t} + {s} + {d} = {total}"
    )


def lower_threads() -> str:
    return f"or lower {', '.join(THREAD_KEYS)}"


def pgbouncer_open_files(max_clients: int, pool_size: int) -> int:
    """Descriptors PgBouncer needs: every client, every server connection, its own."""
    return max_clients + pool_size + PGBOUNCER_OWN_FILES


def parse_pooling(v: Validation, mode: str | None) -> dict[str, Any]:
    """`max_connections`, `pool` (PoolSettings, or None when pgbouncer is off) and
    `mastodon_clients` ((count, its sum) or None) for the other records; problems go to `v`."""
    clients = mastodon_clients(v)
    values = v.read(POOL_FIELDS)
    port = values["pgbouncerPort"]
    if port == POSTGRES_PORT:
        v.bad("pgbouncerPort", port, "PostgreSQL's own port", set_command("pgbouncerPort", 6432))
    result = {
        "max_connections": values["maxConnections"],
        "pool": None,
        "mastodon_clients": clients,
    }
    if mode == "managed" or clients is None:
        return result
    if values["maxConnections"] is not None:
        check_max_connections(v, clients, values["maxConnections"])
    if values["pgbouncer"] and None not in values.values():
        pool = PoolSettings(
            port, clients[0], values["pgbouncerMaxClientConn"], values["pgbouncerOpenFiles"]
        )
        if check_pgbouncer(v, clients, pool) and v.ok("pgbouncerPort"):
            result["pool"] = pool
    return result


def check_max_connections(v: Validation, clients: tuple[int, str], limit: int) -> None:
    """Every client's connection (through a pool or not) and the direct ones fit in
    max_connections, on the primary and on every replica (the same value)."""
    size, sum_text = clients
    needed = size + DIRECT_CONNECTIONS + SUPERUSER_RESERVED
    if needed <= limit:
        return
    v.bad(
        "maxConnections",
        limit,
        f"too small for Mastodon's connections: {sum_text} (the pool of each host), + "
        f"{DIRECT_CONNECTIONS} direct (migrations, checks) + {SUPERUSER_RESERVED} "
        f"superuser_reserved_connections = {needed}",
        f"{set_command('maxConnections', needed)} ({lower_threads()})",
    )


def check_pgbouncer(v: Validation, clients: tuple[int, str], pool: PoolSettings) -> bool:
    """Mastodon's clients fit in max_client_conn (twice: a rolling restart), and PgBouncer's
    descriptors (max_client_conn clients + the pool's server connections) in its open-file
    limit: PgBouncer past its limit refuses clients (Hachyderm, January 2025)."""
    count, sum_text = clients
    needed_clients = RESTART_FACTOR * count
    fits = True
    if pool.pgbouncer_max_client_conn < needed_clients:
        fits = False
        v.bad(
            "pgbouncerMaxClientConn",
            pool.pgbouncer_max_client_conn,
            f"too small for Mastodon's clients: {sum_text}, twice during a rolling restart "
            f"(old and new processes side by side) = {needed_clients}",
            f"{set_command('pgbouncerMaxClientConn', needed_clients)} ({lower_threads()})",
        )
    needed_files = pgbouncer_open_files(pool.pgbouncer_max_client_conn, pool.size)
    if pool.pgbouncer_open_files < needed_files:
        fits = False
        v.bad(
            "pgbouncerOpenFiles",
            pool.pgbouncer_open_files,
            f"too small for PgBouncer's connections, a descriptor each: pgbouncerMaxClientConn "
            f"{pool.pgbouncer_max_client_conn} + the pool's {pool.size} server connections + "
            f"{PGBOUNCER_OWN_FILES} of its own = {needed_files}; past its limit PgBouncer "
            "refuses clients",
            f"{set_command('pgbouncerOpenFiles', needed_files)} (or lower pgbouncerMaxClientConn)",
        )
    return fits
