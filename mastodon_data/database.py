"""The stack's PostgreSQL as Mastodon's role reaches it, from the stack outputs: the operator's
commands (check-replication) and the lab's measurements connect the same way."""

from __future__ import annotations

import psycopg

CONNECT_TIMEOUT = 5  # seconds per host


def lsn(text: str | None) -> int | None:
    """A WAL position ("16/B374D848") as a number, so positions compare correctly."""
    if not text:
        return None
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def direct_env(outputs: dict) -> dict:
    """Mastodon's credentials, at PostgreSQL itself rather than a pool: the check counts each
    server's own connections, and a transaction pool would not keep its session."""
    postgres = outputs.get("postgres") or {}
    env = dict(outputs["mastodon_env"])
    if postgres.get("port"):
        env |= {"DB_PORT": postgres["port"], "DB_NAME": postgres["database"]}
    return env


def connect(env: dict, host: str) -> psycopg.Connection:
    """Mastodon's role (the DB_* variables of `env`) on `host`, autocommit."""
    return psycopg.connect(
        host=host,
        port=env["DB_PORT"],
        dbname=env["DB_NAME"],
        user=env["DB_USER"],
        password=env["DB_PASS"],
        sslmode=env.get("DB_SSLMODE", "require"),
        connect_timeout=CONNECT_TIMEOUT,
        autocommit=True,
        application_name="mastodon-data-check",
    )
