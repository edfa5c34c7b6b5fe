"""Mastodon's writes, as its processes make them: clients that keep the env they started with
(DB_HOST and all, until restarted), through PgBouncer in transaction mode without prepared
statements, each committing numbered rows one transaction at a time. Every error is recorded,
and the longest time a client waited between two of its commits.

    with WriteLoad(env, clients=8) as load:
        ...  # a switchover
    load.errors, load.committed, load.longest_pause_s
"""

from __future__ import annotations

import threading
import time

import psycopg

TABLE = "write_load"  # its own table: a lab test may have a ledger of its own
CONNECT_TIMEOUT = 10  # seconds


def connect(env: dict[str, str], timeout: float = CONNECT_TIMEOUT) -> psycopg.Connection:
    """A connection as Mastodon's primary one (DB_*) through the env's pool."""
    return psycopg.connect(
        host=env["DB_HOST"], port=env["DB_PORT"], dbname=env["DB_NAME"], user=env["DB_USER"],
        password=env["DB_PASS"], sslmode=env["DB_SSLMODE"], connect_timeout=timeout,
        prepare_threshold=None, autocommit=True,
    )  # fmt: skip


class WriteLoad:
    def __init__(self, env: dict[str, str], clients: int = 8, first_client: int = 0):
        """`clients` writers numbered from `first_client` (two loads at once: apart)."""
        self.env = dict(env)  # kept as it was at the start, as Mastodon keeps its own
        self.clients = range(first_client, first_client + clients)
        self.committed: dict[int, list[int]] = {c: [] for c in self.clients}
        self.errors: list[str] = []
        self.pauses = dict.fromkeys(self.clients, 0.0)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> WriteLoad:
        with connect(self.env) as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (client int, n int, PRIMARY KEY (client, n))"
            )
        for client in self.clients:
            thread = threading.Thread(target=self._client, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=180)  # PgBouncer's query_wait_timeout is 120 s

    def _client(self, client: int) -> None:
        conn, n, last = None, 0, time.monotonic()
        while not self._stop.is_set():
            try:
                conn = conn or connect(self.env)
                conn.execute(f"INSERT INTO {TABLE} VALUES (%s, %s)", (client, n))
            except psycopg.Error as exc:
                self.errors.append(f"client {client}, row {n}: {exc}".strip())
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
                continue
            now = time.monotonic()
            self.pauses[client] = max(self.pauses[client], now - last)
            self.committed[client].append(n)
            n, last = n + 1, now
        if conn is not None:
            conn.close()

    @property
    def longest_pause_s(self) -> float:
        """The longest wait of any client between two of its commits."""
        return round(max(self.pauses.values()), 3)

    @property
    def rows(self) -> set[tuple[int, int]]:
        return {(c, n) for c, numbers in self.committed.items() for n in numbers}


def first_write_s(env: dict[str, str], since: float, limit: float) -> float:
    """Seconds from `since` (time.monotonic()) until a write through `env` is accepted."""
    deadline = since + limit
    while time.monotonic() < deadline:
        try:
            with connect(env, timeout=2) as conn:
                conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE}_probe (at timestamptz)")
                conn.execute(f"INSERT INTO {TABLE}_probe VALUES (now())")
            return round(time.monotonic() - since, 2)
        except psycopg.Error:
            time.sleep(0.05)
    raise AssertionError(f"no write accepted through {env['DB_HOST']} within {limit} s")
