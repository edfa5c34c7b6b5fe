"""The rendered environment against real local services: Mastodon's variables from the pure env
functions, through `mastodon-data render-env` into .env files, then connected to exactly as the
variables say — PostgreSQL through PgBouncer in transaction mode (no prepared statements), the
migration env straight to PostgreSQL, the replica variables directly, and Redis over TLS with
the rendered rediss:// URL. Loopback only; every process and file is removed afterwards."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from localkit import (
    LOOPBACK,
    LocalPostgres,
    LocalRedis,
    make_ca,
    missing_postgres,
    missing_redis,
    temp_dir,
)

from mastodon_data.cli.grant import GrantError, grant
from mastodon_data.env import mastodon_env, migration_env, redis_url
from tests.fixtures import COMMAND

pytestmark = pytest.mark.local

DB_NAME, DB_USER, POOL_NAME, POOL_SIZE = "mastodon_production", "mastodon", "mastodon_pool", 2
DB_PASSWORD = "local-Pw0rd-0123456789"
REDIS_PASSWORD = "redis/pass+word@1:x"  # URL-special characters on purpose


def render(directory: Path, outputs: dict, key: str, filename: str) -> dict[str, str]:
    """Runs the pipeline step and reads the file back as dotenv does (plain or '...')."""
    result = subprocess.run(
        [COMMAND, "render-env", "--key", key, "--output", str(directory / filename)],
        input=json.dumps(outputs),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    env = {}
    for line in (directory / filename).read_text().splitlines():
        name, _, value = line.partition("=")
        env[name] = value[1:-1] if re.fullmatch(r"'.*'", value) else value
    return env


def connect(env: dict[str, str], prefix: str = ""):
    """psycopg connected exactly as Mastodon's variables say."""
    import psycopg

    def var(name: str) -> str:
        return env.get(f"{prefix}{name}", env[name]) if prefix else env[name]

    prepared = env.get(f"{prefix}PREPARED_STATEMENTS" if prefix else "PREPARED_STATEMENTS")
    if prefix and prepared is None:
        prepared = env.get("PREPARED_STATEMENTS")
    return psycopg.connect(
        host=var("DB_HOST"),
        port=int(var("DB_PORT")),
        dbname=var("DB_NAME"),
        user=var("DB_USER"),
        password=var("DB_PASS"),
        sslmode=env["DB_SSLMODE"],  # Mastodon applies DB_SSLMODE to the replica too
        connect_timeout=10,
        # PREPARED_STATEMENTS=false: no server-side prepared statements (psycopg: None).
        prepare_threshold=None if prepared == "false" else 0,
    )


@pytest.fixture(scope="module")
def postgres():
    reason = missing_postgres()
    if reason:
        pytest.skip(reason)
    with temp_dir(owner="postgres") as root:
        server = LocalPostgres(root, DB_PASSWORD)
        try:
            server.start(DB_NAME, DB_USER, POOL_NAME, POOL_SIZE)
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def rendered(postgres, tmp_path_factory):
    """The stack outputs as the managed stack would have them for these endpoints: DB_* at the
    pool, the replica (here: the same server) and migrations direct."""
    outputs = {
        "mastodon_env": mastodon_env(
            db_host=LOOPBACK,
            db_port=postgres.bouncer_port,
            db_name=POOL_NAME,
            db_user=DB_USER,
            db_password=DB_PASSWORD,
            replica_host=LOOPBACK,
            replica_port=postgres.port,
            replica_db_name=DB_NAME,
            through_pool=True,
        ),
        "migration_env": migration_env(db_host=LOOPBACK, db_port=postgres.port, db_name=DB_NAME),
    }
    directory = tmp_path_factory.mktemp("env")
    env = render(directory, outputs, "mastodon_env", ".env.production")
    migration = render(directory, outputs, "migration_env", ".env.migration")
    return env, migration


def interleaved_errors(env: dict[str, str], clients: int = 3, rounds: int = 20) -> list[str]:
    """Short transactions of one parameterised query from several clients in turn, as Puma
    threads and Sidekiq do; PgBouncer hands each transaction whichever server connection is
    free (pool of 2). Returns the errors."""
    import psycopg

    conns = [connect(env) for _ in range(clients)]
    errors = []
    try:
        for number in range(rounds):
            for conn in conns:
                try:
                    with conn.transaction():
                        conn.execute("SELECT %s::int + 1", (number,)).fetchone()
                except psycopg.Error as error:
                    errors.append(str(error).splitlines()[0])
    finally:
        for conn in conns:
            conn.close()
    return errors


def test_app_env_goes_through_pgbouncer_in_transaction_mode(postgres, rendered):
    env, _ = rendered
    assert env["PREPARED_STATEMENTS"] == "false"
    assert env["DB_PORT"] == str(postgres.bouncer_port)
    with connect(env) as conn:
        assert conn.pgconn.ssl_in_use  # DB_SSLMODE=require against the pool's TLS
        assert conn.prepare_threshold is None
        assert conn.execute("SELECT current_database()").fetchone() == (DB_NAME,)
        conn.execute("CREATE TABLE IF NOT EXISTS statuses (id bigint PRIMARY KEY, text text)")
        conn.commit()
        for number in range(30):
            with conn.transaction():
                conn.execute(
                    "INSERT INTO statuses VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (number, f"toot {number}"),
                )
        assert conn.execute("SELECT count(*) FROM statuses").fetchone() == (30,)
    assert interleaved_errors(env) == []


def test_prepared_statements_break_behind_the_transaction_pool(rendered):
    """Why PREPARED_STATEMENTS=false: the same clients with prepared statements collide."""
    env, _ = rendered
    errors = interleaved_errors({**env, "PREPARED_STATEMENTS": "true"})
    assert errors and all("prepared statement" in error for error in errors)


def test_pool_is_pgbouncer_not_postgres(postgres, rendered):
    env, _ = rendered
    with connect(env) as via_pool, connect({**env, "DB_PORT": str(postgres.port),
                                            "DB_NAME": DB_NAME}) as direct:  # fmt: skip
        # The backend a pooled session reaches is another process than our direct one, and the
        # server port behind the pool is PostgreSQL's.
        assert via_pool.execute("SELECT inet_server_port()").fetchone() == (postgres.port,)
        assert direct.execute("SELECT inet_server_port()").fetchone() == (postgres.port,)
        assert via_pool.info.port == postgres.bouncer_port


def test_migration_env_connects_directly_with_prepared_statements(postgres, rendered):
    env, migration = rendered
    assert migration == {
        "DB_HOST": LOOPBACK,
        "DB_PORT": str(postgres.port),
        "DB_NAME": DB_NAME,
        "PREPARED_STATEMENTS": "true",
    }
    merged = {**env, **migration}  # the overrides win, as in the shell with `set -a; . file`
    with connect(merged) as conn:
        assert conn.info.port == postgres.port and conn.pgconn.ssl_in_use
        assert conn.prepare_threshold == 0  # every statement prepared: fine without a pool
        # Session-level state a transaction pool would lose, as migrations use it.
        conn.execute("SELECT pg_advisory_lock(42)")
        conn.execute("ALTER TABLE IF EXISTS statuses ADD COLUMN IF NOT EXISTS language text")
        conn.execute("SELECT pg_advisory_unlock(42)")
        conn.commit()
        for _ in range(3):
            conn.execute("SELECT count(*) FROM statuses WHERE id > %s", (0,))


def test_replica_variables_connect_directly(postgres, rendered):
    env, _ = rendered
    assert env["REPLICA_DB_NAME"] == DB_NAME and env["REPLICA_PREPARED_STATEMENTS"] == "true"
    with connect(env, prefix="REPLICA_") as conn:
        assert conn.info.port == postgres.port and conn.pgconn.ssl_in_use
        assert conn.execute("SELECT current_database()").fetchone() == (DB_NAME,)


def test_wrong_password_is_refused_by_the_pool(rendered):
    import psycopg

    env, _ = rendered
    with pytest.raises(psycopg.OperationalError):
        connect({**env, "DB_PASS": "not-the-password-0000"}).close()


@pytest.fixture(scope="module")
def valkey_stand_in():
    reason = missing_redis()
    if reason:
        pytest.skip(reason)
    with temp_dir() as root:
        server = LocalRedis(root, REDIS_PASSWORD)
        try:
            server.start()
            yield server
        finally:
            server.stop()


def test_rendered_rediss_url_reaches_redis_over_tls(valkey_stand_in, tmp_path):
    import redis

    url = redis_url(
        user="default", password=REDIS_PASSWORD, host=LOOPBACK, port=valkey_stand_in.port
    )
    outputs = {
        "mastodon_env": mastodon_env(
            db_host=LOOPBACK, db_port=5432, db_name=DB_NAME, db_user=DB_USER,
            db_password=DB_PASSWORD, redis=url,
        )
    }  # fmt: skip
    env = render(tmp_path, outputs, "mastodon_env", ".env.production")
    assert env["REDIS_DRIVER"] == "ruby" and env["REDIS_URL"].startswith("rediss://")
    client = redis.Redis.from_url(
        env["REDIS_URL"], ssl_ca_certs=str(valkey_stand_in.ca_cert), socket_timeout=5
    )
    try:
        assert client.ping() is True
        client.set("mastodon-data:test", "queued")
        assert client.get("mastodon-data:test") == b"queued"
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    finally:
        client.close()


def test_redis_refuses_a_certificate_from_another_ca(valkey_stand_in, tmp_path):
    import redis

    other_ca, _ = make_ca(tmp_path, "other-ca")
    url = redis_url(
        user="default", password=REDIS_PASSWORD, host=LOOPBACK, port=valkey_stand_in.port
    )
    client = redis.Redis.from_url(url, ssl_ca_certs=str(other_ca), socket_timeout=5)
    try:
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        client.close()


def test_redis_refuses_a_wrong_password(valkey_stand_in):
    import redis

    url = redis_url(user="default", password="wrong", host=LOOPBACK, port=valkey_stand_in.port)
    client = redis.Redis.from_url(url, ssl_ca_certs=str(valkey_stand_in.ca_cert), socket_timeout=5)
    try:
        with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
            client.ping()
    finally:
        client.close()


def test_grant_lets_a_new_role_create_tables_in_an_admin_owned_database(postgres, tmp_path):
    """As on DigitalOcean: the database belongs to the admin user (not a superuser), the app's
    role was made with minimal rights; PostgreSQL 15 then refuses CREATE in schema public."""
    import psycopg

    admin_password = "admin-Pw0rd-0123456789"
    postgres.superuser_sql(
        f"CREATE ROLE doadmin LOGIN CREATEDB CREATEROLE PASSWORD '{admin_password}'",
        f"CREATE ROLE app_user LOGIN PASSWORD '{DB_PASSWORD}'",
    )
    postgres.superuser_sql("SET ROLE doadmin", "CREATE DATABASE managed_db")
    as_app = {
        "host": LOOPBACK, "port": postgres.port, "user": "app_user", "password": DB_PASSWORD,
        "dbname": "managed_db", "sslmode": "require", "connect_timeout": 10, "autocommit": True,
    }  # fmt: skip
    with psycopg.connect(**as_app) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("CREATE TABLE accounts (id bigint)")
    outputs = {
        "postgres": {"database": "managed_db", "user": "app_user"},
        "postgres_admin": {
            "host": LOOPBACK, "port": postgres.port, "user": "doadmin", "password": admin_password,
        },
        "postgres_ca_cert": postgres.ca_cert.read_text(),
    }  # fmt: skip
    with pytest.raises(GrantError, match="no postgres_ca_cert output"):
        grant({k: v for k, v in outputs.items() if k != "postgres_ca_cert"})
    other_ca, _ = make_ca(tmp_path, "other")  # verify-full: another CA's certificate is refused
    with pytest.raises(GrantError, match="certificate verify failed"):
        grant({**outputs, "postgres_ca_cert": other_ca.read_text()})
    for _ in range(2):  # idempotent
        assert "app_user may now create its tables in managed_db" in grant(outputs)
    with psycopg.connect(**as_app) as conn:
        conn.execute("CREATE TABLE accounts (id bigint)")
        conn.execute("CREATE TEMPORARY TABLE scratch (id bigint)")
    with pytest.raises(GrantError, match="OperationalError") as caught:
        grant({**outputs, "postgres_admin": {**outputs["postgres_admin"], "password": "wrong"}})
    assert admin_password not in str(caught.value)
