"""New connections through a read endpoint, as Mastodon's REPLICA_DB_* say (psycopg, TLS as
`DB_SSLMODE`, no prepared statements: the pools run in transaction mode), each asked which
replica it landed on (`inet_server_addr()`: PgBouncer logs in to its replica's private
address). The read endpoint's lab test and its benchmark use them."""

from __future__ import annotations

import threading
import time
from collections import Counter

import psycopg


def read_connection(env: dict, timeout: float = 5) -> psycopg.Connection:
    """A new connection through the read endpoint of `env` (Mastodon's variables)."""
    return psycopg.connect(
        host=env["REPLICA_DB_HOST"], port=env["REPLICA_DB_PORT"], dbname=env["REPLICA_DB_NAME"],
        user=env["REPLICA_DB_USER"], password=env["REPLICA_DB_PASS"], sslmode=env["DB_SSLMODE"],
        connect_timeout=timeout, prepare_threshold=None, autocommit=True,
    )  # fmt: skip


def landed_on(env: dict) -> str:
    """The private address of the replica a new connection lands on (after one read)."""
    with read_connection(env) as conn:
        conn.execute("SELECT count(*) FROM pg_class").fetchone()
        return str(conn.execute("SELECT inet_server_addr()").fetchone()[0])


def spread(env: dict, count: int) -> tuple[Counter, int]:
    """(connections per replica address, failures) of `count` new connections, one a time."""
    seen, failures = Counter(), 0
    for _ in range(count):
        try:
            seen[landed_on(env)] += 1
        except psycopg.Error:
            failures += 1
    return seen, failures


def attempt(env: dict, outcome: list) -> None:
    """`outcome[0]` becomes where a new connection landed, or "failed"."""
    try:
        outcome[0] = landed_on(env)
    except psycopg.Error:
        outcome[0] = "failed"


def probes_over(env: dict, seconds: float, every: float = 0.1, deadline: float = 3.0) -> list:
    """New connections started every `every` s for `seconds` s, each in a daemon thread of its
    own so that none waits for another: [(when it was sent, where it landed, or "failed", or
    "timeout": no answer within `deadline` s, as PgBouncer holds a client in its queue while
    its PostgreSQL is down, up to its query_wait_timeout)]."""
    started, sent = time.monotonic(), []
    while time.monotonic() - started < seconds:
        outcome = ["timeout"]
        worker = threading.Thread(target=attempt, args=(env, outcome), daemon=True)
        worker.start()
        sent.append((round(time.monotonic() - started, 2), worker, outcome))
        time.sleep(every)
    for at, worker, _ in sent:
        worker.join(max(0.0, started + at + deadline - time.monotonic()))
    return [(at, outcome[0]) for at, _, outcome in sent]
