"""components/env.py: exactly the variables Mastodon reads, with and without a replica."""

from __future__ import annotations

from components.env import MANAGED_KEYS, SUPERSEDED_KEYS, mastodon_env

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


def test_managed_keys_cover_every_emitted_key() -> None:
    emitted = set(with_replica(replica_host="10.118.0.3", replica_port=5432))
    assert emitted == set(MANAGED_KEYS)
    assert not set(MANAGED_KEYS) & set(SUPERSEDED_KEYS)
