"""mastodon_data/env.py: exactly the variables Mastodon reads, with and without a replica, through
a pool, with Redis and object storage; the migration overrides; which keys a renderer owns."""

from __future__ import annotations

from mastodon_data.env import (
    KEY_GROUPS,
    MANAGED_KEYS,
    SUPERSEDED_KEYS,
    ObjectStorage,
    mastodon_env,
    migration_env,
    owned_keys,
    redis_url,
)

PRIMARY = {
    "DB_HOST": "10.118.0.2",
    "DB_PORT": "5432",
    "DB_NAME": "mastodon_production",
    "DB_USER": "mastodon",
    "DB_PASS": "pw-0123456789abcdef",
    "DB_SSLMODE": "require",
}


def primary_only() -> dict[str, str]:
    return mastodon_env(
        db_host="10.118.0.2",
        db_port=5432,
        db_name="mastodon_production",
        db_user="mastodon",
        db_password="pw-0123456789abcdef",
    )


def with_replica(**replica: object) -> dict[str, str]:
    return mastodon_env(
        db_host="10.118.0.2",
        db_port=5432,
        db_name="mastodon_production",
        db_user="mastodon",
        db_password="pw-0123456789abcdef",
        **replica,
    )


def test_primary_only() -> None:
    assert primary_only() == PRIMARY


def test_with_replica() -> None:
    assert with_replica(replica_host="10.118.0.3", replica_port=6432) == {
        **PRIMARY,
        "REPLICA_DB_HOST": "10.118.0.3",
        "REPLICA_DB_PORT": "6432",
        "REPLICA_DB_NAME": "mastodon_production",  # what switches the replica on in Mastodon
        "REPLICA_DB_USER": "mastodon",
        "REPLICA_DB_PASS": "pw-0123456789abcdef",
    }


def test_replica_port_defaults_to_the_primary_port() -> None:
    assert with_replica(replica_host="10.118.0.3")["REPLICA_DB_PORT"] == "5432"


def test_no_url_variables() -> None:
    for env in (primary_only(), with_replica(replica_host="10.118.0.3", replica_port=5432)):
        assert not set(env) & {"DATABASE_URL", "DATABASE_REPLICA_URL", "REPLICA_DATABASE_URL"}
        assert all(isinstance(value, str) for value in env.values())


STORAGE = ObjectStorage(
    bucket="mastodon-media",
    region="nyc3",
    endpoint_host="nyc3.digitaloceanspaces.com",
    alias_host="mastodon-media.nyc3.cdn.digitaloceanspaces.com",
    access_key_id="DO00KEY",
    secret_access_key="spaces-secret",
)
S3 = {
    "S3_ENABLED": "true",
    "S3_BUCKET": "mastodon-media",
    "S3_REGION": "nyc3",
    "S3_PROTOCOL": "https",
    "S3_HOSTNAME": "nyc3.digitaloceanspaces.com",
    "S3_ENDPOINT": "https://nyc3.digitaloceanspaces.com",
    "S3_ALIAS_HOST": "mastodon-media.nyc3.cdn.digitaloceanspaces.com",
    "S3_PERMISSION": "public-read",
    "AWS_ACCESS_KEY_ID": "DO00KEY",
    "AWS_SECRET_ACCESS_KEY": "spaces-secret",
}


def through_pool(**extra: object) -> dict[str, str]:
    return mastodon_env(
        db_host="private-pool.db.ondigitalocean.com",
        db_port=25061,
        db_name="mastodon_pool",
        db_user="mastodon",
        db_password="pw-0123456789abcdef",
        through_pool=True,
        **extra,
    )


def test_through_the_pool_without_prepared_statements() -> None:
    assert through_pool() == {
        "DB_HOST": "private-pool.db.ondigitalocean.com",
        "DB_PORT": "25061",
        "DB_NAME": "mastodon_pool",
        "DB_USER": "mastodon",
        "DB_PASS": "pw-0123456789abcdef",
        "DB_SSLMODE": "require",
        "PREPARED_STATEMENTS": "false",
    }


def test_pool_with_a_direct_replica() -> None:
    env = through_pool(
        replica_host="private-replica.db.ondigitalocean.com",
        replica_port=25060,
        replica_db_name="mastodon_production",
    )
    assert {k: v for k, v in env.items() if k.startswith("REPLICA_")} == {
        "REPLICA_DB_HOST": "private-replica.db.ondigitalocean.com",
        "REPLICA_DB_PORT": "25060",
        "REPLICA_DB_NAME": "mastodon_production",  # the database itself, not the pool
        "REPLICA_DB_USER": "mastodon",
        "REPLICA_DB_PASS": "pw-0123456789abcdef",
        "REPLICA_PREPARED_STATEMENTS": "true",  # direct: no pool in the way
    }


def test_redis_and_object_storage_in_any_mode() -> None:
    env = with_replica(
        replica_host="10.118.0.3", redis="rediss://default:p@h:25061", object_storage=STORAGE
    )
    assert env["REDIS_URL"] == "rediss://default:p@h:25061"
    assert env["REDIS_DRIVER"] == "ruby"  # hiredis has no TLS
    assert "REDIS_NAMESPACE" not in env
    assert {k: v for k, v in env.items() if k in S3} == S3
    assert "PREPARED_STATEMENTS" not in env  # no pool: Mastodon's default (true)


def test_the_caches_own_redis_is_cache_redis_url_beside_redis_url() -> None:
    queues, cache = "rediss://default:p@q:25061", "rediss://default:c@c:25061"
    env = with_replica(replica_host="10.118.0.3", redis=queues, cache_redis=cache)
    assert (env["REDIS_URL"], env["CACHE_REDIS_URL"]) == (queues, cache)
    assert "CACHE_REDIS_URL" not in with_replica(replica_host="10.118.0.3", redis=queues)


def test_redis_url_encodes_the_password() -> None:
    assert (
        redis_url(user="default", password="a/b+c@d:e", host="h.example", port=25061)
        == "rediss://default:a%2Fb%2Bc%40d%3Ae@h.example:25061"
    )


def test_migration_env_goes_direct_with_prepared_statements() -> None:
    assert migration_env(
        db_host="private-db.example", db_port=25060, db_name="mastodon_production"
    ) == {
        "DB_HOST": "private-db.example",
        "DB_PORT": "25060",
        "DB_NAME": "mastodon_production",
        "PREPARED_STATEMENTS": "true",
    }


def test_managed_keys_cover_every_emitted_key() -> None:
    emitted = set(
        through_pool(
            replica_host="r",
            replica_port=25060,
            redis="rediss://u:p@h:1",
            cache_redis="rediss://u:p@c:1",
            object_storage=STORAGE,
        )
    )
    emitted |= set(with_replica(replica_host="10.118.0.3", replica_port=5432))
    assert emitted == set(MANAGED_KEYS)
    assert not set(MANAGED_KEYS) & set(SUPERSEDED_KEYS)
    assert all(isinstance(v, str) for v in through_pool(redis="x", object_storage=STORAGE).values())


def test_owned_keys_follow_the_groups_the_stack_emits() -> None:
    database = set(KEY_GROUPS["database"][0]) | set(KEY_GROUPS["database"][1])
    assert owned_keys(primary_only()) == database  # S3/Redis lines of the operator stay
    assert owned_keys(primary_only() | {"REDIS_URL": "x"}) == database | {
        "REDIS_URL",
        "REDIS_DRIVER",
        "CACHE_REDIS_URL",
        "REDIS_NAMESPACE",
    }
    assert set(S3) <= owned_keys(primary_only() | {"S3_BUCKET": "b"})
