"""The database part of Mastodon's environment, from resolved values. Pure.

Names are the ones Mastodon reads (config/database.yml, streaming/index.js; see FACTS.md).
`DATABASE_REPLICA_URL` is read by nothing, and `DATABASE_URL` / `REPLICA_DATABASE_URL` would
override the DB_* / REPLICA_DB_* values, so none of them is ever emitted.
"""

from __future__ import annotations

PRIMARY_KEYS = ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASS", "DB_SSLMODE")
REPLICA_KEYS = (
    "REPLICA_DB_HOST",
    "REPLICA_DB_PORT",
    "REPLICA_DB_NAME",
    "REPLICA_DB_USER",
    "REPLICA_DB_PASS",
)
# Every key mastodon_env can emit: a renderer owns these in an existing .env.production.
MANAGED_KEYS = PRIMARY_KEYS + REPLICA_KEYS
# Keys that would silently win over the managed ones (or, for the seed's DATABASE_REPLICA_URL,
# suggest a replica that is not used): a renderer removes them.
SUPERSEDED_KEYS = ("DATABASE_URL", "REPLICA_DATABASE_URL", "DATABASE_REPLICA_URL")
# The primary has SSL on; "require" encrypts without checking the certificate in Rails (libpq).
SSLMODE = "require"


def mastodon_env(
    *,
    db_host: str,
    db_port: int,
    db_name: str,
    db_user: str,
    db_password: str,
    replica_host: str | None = None,
    replica_port: int | None = None,
) -> dict[str, str]:
    """Mastodon's database variables; REPLICA_DB_* only when there is a replica."""
    env = {
        "DB_HOST": db_host,
        "DB_PORT": str(db_port),
        "DB_NAME": db_name,
        "DB_USER": db_user,
        "DB_PASS": db_password,
        "DB_SSLMODE": SSLMODE,  # applies to the replica connection too
    }
    if replica_host:
        env |= {
            "REPLICA_DB_HOST": replica_host,
            "REPLICA_DB_PORT": str(replica_port if replica_port is not None else db_port),
            # REPLICA_DB_NAME is what switches the replica on (REPLICA_DB_HOST only from 4.6).
            "REPLICA_DB_NAME": db_name,
            "REPLICA_DB_USER": db_user,
            "REPLICA_DB_PASS": db_password,
        }
    return env
