"""Mastodon's environment from resolved values. Pure.

Names are the ones Mastodon reads (config/database.yml, streaming/index.js,
config/initializers/paperclip.rb, lib/mastodon/redis_configuration.rb; see
docs/operators/outputs.md).
`DATABASE_REPLICA_URL` is read by nothing, and `DATABASE_URL` / `REPLICA_DATABASE_URL` would
override the DB_* / REPLICA_DB_* values, so none of them is ever emitted; nor is
`REDIS_NAMESPACE` (Mastodon 4.4+ refuses to start with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

PRIMARY_KEYS = ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASS", "DB_SSLMODE")
REPLICA_KEYS = (
    "REPLICA_DB_HOST",
    "REPLICA_DB_PORT",
    "REPLICA_DB_NAME",
    "REPLICA_DB_USER",
    "REPLICA_DB_PASS",
)
DATABASE_KEYS = (
    *PRIMARY_KEYS,
    "PREPARED_STATEMENTS",
    *REPLICA_KEYS,
    "REPLICA_PREPARED_STATEMENTS",
)
REDIS_KEYS = ("REDIS_URL", "REDIS_DRIVER", "CACHE_REDIS_URL")
S3_KEYS = (
    "S3_ENABLED",
    "S3_BUCKET",
    "S3_REGION",
    "S3_PROTOCOL",
    "S3_HOSTNAME",
    "S3_ENDPOINT",
    "S3_ALIAS_HOST",
    "S3_PERMISSION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)
# Each group: the keys mastodon_env can emit, and the keys that would silently win over them
# (or, for DATABASE_REPLICA_URL, suggest a replica that is not used; for REDIS_NAMESPACE, stop
# Mastodon 4.4+ from starting). A renderer owns a group's keys when the env has any of them.
KEY_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "database": (DATABASE_KEYS, ("DATABASE_URL", "REPLICA_DATABASE_URL", "DATABASE_REPLICA_URL")),
    "redis": (REDIS_KEYS, ("REDIS_NAMESPACE",)),
    "s3": (S3_KEYS, ()),
}
MANAGED_KEYS = tuple(key for keys, _ in KEY_GROUPS.values() for key in keys)
SUPERSEDED_KEYS = tuple(key for _, superseded in KEY_GROUPS.values() for key in superseded)
# Why a renderer removes a superseded key (shown in its summary).
SUPERSEDED_REASONS = {
    "DATABASE_URL": "would override DB_* / REPLICA_DB_*",
    "REPLICA_DATABASE_URL": "would override DB_* / REPLICA_DB_*",
    "DATABASE_REPLICA_URL": "would override DB_* / REPLICA_DB_*",
    "REDIS_NAMESPACE": "Mastodon 4.4+ refuses to start with it",
}
# The server has SSL on; "require" encrypts without checking the certificate in Rails (libpq).
SSLMODE = "require"


@dataclass(frozen=True)
class ObjectStorage:
    """A Spaces bucket as Mastodon uses it."""

    bucket: str
    region: str
    endpoint_host: str  # <region>.digitaloceanspaces.com (the bucket's `endpoint`)
    alias_host: str  # the CDN endpoint or its custom domain: what media URLs use
    access_key_id: str
    secret_access_key: str


def owned_keys(env: dict[str, str], always: tuple[str, ...] = ("database",)) -> set[str]:
    """The keys a renderer manages for `env`: every group it emits (and `always`), whole, with
    the keys that would override them. A group the stack does not emit (no Spaces here, say)
    stays as the operator wrote it."""
    owned: set[str] = set()
    for group, (keys, superseded) in KEY_GROUPS.items():
        if group in always or set(keys) & set(env):
            owned |= set(keys) | set(superseded)
    return owned


def redis_url(*, user: str, password: str, host: str, port: int) -> str:
    """rediss:// (TLS) with the user and password percent-encoded."""
    return f"rediss://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}"


def mastodon_env(
    *,
    db_host: str,
    db_port: int,
    db_name: str,
    db_user: str,
    db_password: str,
    replica_host: str | None = None,
    replica_port: int | None = None,
    replica_db_name: str | None = None,
    through_pool: bool = False,
    replica_through_pool: bool = False,
    redis: str | None = None,
    cache_redis: str | None = None,
    object_storage: ObjectStorage | None = None,
) -> dict[str, str]:
    """Mastodon's variables: the database (REPLICA_DB_* only with a replica), and Redis (with
    `cache_redis`, the cache's own) and object storage when given.

    `through_pool`: DB_* point at a pgBouncer pool in transaction mode, where prepared statements
    break. `replica_through_pool`: so do REPLICA_DB_* (PgBouncer on the replica too); else the
    replica (`replica_db_name`, default `db_name`) is reached directly, with prepared statements.
    """
    env = {
        "DB_HOST": db_host,
        "DB_PORT": str(db_port),
        "DB_NAME": db_name,
        "DB_USER": db_user,
        "DB_PASS": db_password,
        "DB_SSLMODE": SSLMODE,  # applies to the replica connection too
    }
    if through_pool:
        env["PREPARED_STATEMENTS"] = "false"
    if replica_host:
        env |= {
            "REPLICA_DB_HOST": replica_host,
            "REPLICA_DB_PORT": str(replica_port if replica_port is not None else db_port),
            # REPLICA_DB_NAME is what switches the replica on (REPLICA_DB_HOST only from 4.6).
            "REPLICA_DB_NAME": replica_db_name or db_name,
            "REPLICA_DB_USER": db_user,
            "REPLICA_DB_PASS": db_password,
        }
        if through_pool or replica_through_pool:
            # Read by Mastodon 4.4+; older versions fall back to PREPARED_STATEMENTS.
            env["REPLICA_PREPARED_STATEMENTS"] = "false" if replica_through_pool else "true"
    if redis is not None:
        env |= {
            "REDIS_URL": redis,
            # The default hiredis driver has no TLS; rediss:// needs the Ruby driver.
            "REDIS_DRIVER": "ruby",
        }
    if cache_redis is not None:  # else Mastodon's cache shares REDIS_URL
        env["CACHE_REDIS_URL"] = cache_redis
    if object_storage is not None:
        env |= s3_env(object_storage)
    return env


def s3_env(storage: ObjectStorage) -> dict[str, str]:
    return {
        "S3_ENABLED": "true",
        "S3_BUCKET": storage.bucket,
        "S3_REGION": storage.region,
        "S3_PROTOCOL": "https",
        "S3_HOSTNAME": storage.endpoint_host,
        "S3_ENDPOINT": f"https://{storage.endpoint_host}",
        # Media URLs are https://<alias>/<path>: no bucket name twice in them.
        "S3_ALIAS_HOST": storage.alias_host,
        # Objects are uploaded publicly readable; the bucket itself (its listing) is private.
        "S3_PERMISSION": "public-read",
        "AWS_ACCESS_KEY_ID": storage.access_key_id,
        "AWS_SECRET_ACCESS_KEY": storage.secret_access_key,
    }


def migration_env(*, db_host: str, db_port: int, db_name: str) -> dict[str, str]:
    """Overrides for `rails db:migrate` straight to PostgreSQL, past any pool: migrations take
    session-level locks and use prepared statements, which a transaction pool breaks."""
    return {
        "DB_HOST": db_host,
        "DB_PORT": str(db_port),
        "DB_NAME": db_name,
        "PREPARED_STATEMENTS": "true",
    }
