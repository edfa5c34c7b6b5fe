"""PgBouncer transaction pools on a lab of their own, through the engine: `pulumi up` of a
hosts-mode stack (primary + 2 replicas) sets up a pool on every host (host/pooler.py); the
rendered `.env.production` goes through them. Proven here: prepared statements break through a
transaction pool and the emitted env does not use them; 200 concurrent clients are served while
PostgreSQL never holds more backends than the pool size; Mastodon's config/database.yml reads
the env as pooled primary and replica, and the migration env as PostgreSQL itself; TLS and SCRAM
on both sides with no clear-text password on the hosts; a second `up` changes nothing."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
from labkit import applied, new_secrets, own_lab

from lab import namespaces as lab_hosts
from lab.stack import LabStack
from tests.fixtures import COMMAND
from tests.mastodon_database import database_config, migration_environment, read_dotenv

pytestmark = [pytest.mark.lab, pytest.mark.engine]
POOL_LAB = lab_hosts.Lab(
    prefix="mlg", subnet="10.233.0.0/24", state_dir=Path("/var/lib/mastodon-lab-pool")
)
PRIMARY, REPLICA = "10.233.0.11", "10.233.0.12"
# 1 Puma process x 5 threads + 5 Sidekiq threads + 5 streaming connections = 15 per pool.
THREADS = {"pumaProcesses": 1, "pumaThreads": 5, "sidekiqThreads": 5, "streamingDbPool": 5}
POOL_SIZE = 15
# The stack, the component, primary + 2 replicas, the slots step, 3 status reports, 3 pooler
# steps, 3 health endpoint steps.
RESOURCES = 15
CLIENTS = 200
SAMPLE_EVERY = 0.02  # seconds between two counts of PostgreSQL's backends


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    with own_lab(POOL_LAB, 3):
        workdir = tmp_path_factory.mktemp("pool")
        secrets = new_secrets(POOL_LAB)
        stack = LabStack("pooltest", workdir / "stack")
        stack.prepare()
        config = lab_hosts.stack_config(POOL_LAB, 2, 3) | THREADS
        outputs = applied(stack, config, secrets)
        yield {
            "stack": stack,
            "config": config,
            "outputs": outputs,
            "secrets": secrets,
            "dir": workdir,
        }


@pytest.fixture(scope="module")
def rendered(pooled):
    """.env.production and .env.migration as the deploy pipeline writes them."""
    files = {}
    for key, name in (("mastodon_env", ".env.production"), ("migration_env", ".env.migration")):
        path = pooled["dir"] / name
        result = subprocess.run(
            [COMMAND, "render-env", "--key", key, "--output", str(path)],
            input=json.dumps(pooled["outputs"]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert path.stat().st_mode & 0o777 == 0o600
        files[name] = read_dotenv(path.read_text())
    return files


def ssh(index: int, command: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    argv = POOL_LAB.ssh_command(POOL_LAB.host(index).address, command)
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)


def connect(config: dict, **extra) -> psycopg.Connection:
    """psycopg connected as Rails would with this database.yml entry: prepared_statements false
    means no server-side prepared statement at all (psycopg: prepare_threshold None), true means
    every statement prepared (0: from its first use, as the pg gem does)."""
    return psycopg.connect(
        host=config["host"],
        port=config["port"],
        dbname=config["database"],
        user=config["username"],
        password=config["password"],
        sslmode=config["sslmode"],
        connect_timeout=10,
        prepare_threshold=0 if config["prepared_statements"] else None,
        **extra,
    )


def test_every_host_runs_a_pool_and_a_second_up_changes_nothing(pooled):
    steps = pooled["outputs"]["steps"]
    for index, name in enumerate(("mlg-h1", "mlg-h2", "mlg-h3"), start=1):
        report = steps[f"pooler-{name}"]
        assert report["listen"] == f"10.233.0.1{index}:6432"
        assert report["pool_size"] == POOL_SIZE and report["probe"] == "ok"
        assert "pgbouncer started" in report["changed"]
        health = steps[f"health-{name}"]  # the replica health endpoint, on every server
        assert health["listen"] == f"10.233.0.1{index}:8008"
        assert (health["status"], health["reason"]) == (
            (503, "not a replica (this server is a primary)")
            if index == 1
            else (200, "streaming replica within the lag bounds")
        )
    assert pooled["stack"].last_changes() == {"create": RESOURCES}
    pooled["stack"].up()
    assert pooled["stack"].last_changes() == {"same": RESOURCES}


def test_mastodon_env_points_at_the_pools_and_migrations_go_direct(pooled, rendered):
    password = pooled["secrets"]["dbPassword"]
    assert rendered[".env.production"] == {
        "DB_HOST": PRIMARY,
        "DB_PORT": "6432",
        "DB_NAME": "mastodon_production",
        "DB_USER": "mastodon",
        "DB_PASS": password,
        "DB_SSLMODE": "require",
        "PREPARED_STATEMENTS": "false",
        "REPLICA_DB_HOST": REPLICA,
        "REPLICA_DB_PORT": "6432",
        "REPLICA_DB_NAME": "mastodon_production_replica",  # the read pool
        "REPLICA_DB_USER": "mastodon",
        "REPLICA_DB_PASS": password,
        "REPLICA_PREPARED_STATEMENTS": "false",
    }
    assert rendered[".env.migration"] == {
        "DB_HOST": PRIMARY,
        "DB_PORT": "5432",
        "DB_NAME": "mastodon_production",
        "PREPARED_STATEMENTS": "true",
    }
    assert pooled["outputs"]["postgres"]["pool"] == {
        "name": "mastodon_production",
        "private_host": PRIMARY,
        "port": 6432,
        "size": POOL_SIZE,
        "mode": "transaction",
    }


def test_mastodons_database_yml_reads_pooled_primary_and_replica_and_direct_migrations(
    pooled, rendered
):
    env = rendered[".env.production"]
    password = pooled["secrets"]["dbPassword"]
    common = {
        "adapter": "postgresql",
        "timeout": 5000,
        "connect_timeout": 15,
        "encoding": "unicode",
        "sslmode": "require",
        "application_name": "",
        "database": "mastodon_production",
        "username": "mastodon",
        "password": password,
    }
    app = database_config(env)
    assert app == {
        "primary": {**common, "host": PRIMARY, "port": 6432, "prepared_statements": False},
        "replica": {
            **common,
            "database": "mastodon_production_replica",  # the read pool, its own server
            "host": REPLICA,
            "port": 6432,
            "prepared_statements": False,
            "replica": True,
            "database_tasks": True,
        },
    }
    migrations = database_config(migration_environment(env, rendered[".env.migration"]))
    assert migrations["primary"] == {
        **common,
        "host": PRIMARY,
        "port": 5432,
        "prepared_statements": True,
    }
    # And each connects as configured: the pools (one a standby's), PostgreSQL itself.
    with connect(app["primary"], autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        assert conn.pgconn.ssl_in_use and conn.info.port == 6432
    with connect(app["replica"], autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    with connect(migrations["primary"]) as conn:
        # Session state a transaction pool would lose, as migrations use it.
        conn.execute("SELECT pg_advisory_lock(42)")
        conn.execute("CREATE TABLE IF NOT EXISTS statuses (id bigint PRIMARY KEY, note text)")
        conn.execute("SELECT pg_advisory_unlock(42)")
        conn.commit()
        assert conn.info.port == 5432


def interleaved(config: dict, clients: int = 3, rounds: int = 10) -> tuple[list[str], int]:
    """Short transactions of one parameterised query from several clients in turn, as Puma and
    Sidekiq threads do: (the errors, the sum of the answers)."""
    conns = [connect(config) for _ in range(clients)]
    errors, total = [], 0
    try:
        for number in range(rounds):
            for conn in conns:
                try:
                    with conn.transaction():
                        total += conn.execute("SELECT %s::int + 1", (number,)).fetchone()[0]
                except psycopg.Error as error:
                    errors.append(str(error).splitlines()[0])
    finally:
        for conn in conns:
            conn.close()
    return errors, total


def test_prepared_statements_fail_through_the_pool_and_the_emitted_env_works(rendered):
    app = database_config(rendered[".env.production"])
    for role in ("primary", "replica"):
        assert app[role]["prepared_statements"] is False
        errors, total = interleaved(app[role])
        assert errors == [] and total == 3 * sum(n + 1 for n in range(10)), role
        # The same clients with Mastodon's default (prepared statements on): the pool hands the
        # second client the server connection where the first prepared its statement.
        errors, _ = interleaved({**app[role], "prepared_statements": True})
        assert errors[0] == 'prepared statement "_pg3_0" already exists', role
        for error in errors:  # psycopg names them _pg3_0, _pg3_1, ... per connection
            assert re.fullmatch(r'prepared statement "_pg3_\d+" (already exists|does not exist)',
                                error), (role, error)  # fmt: skip


def backends(conn: psycopg.Connection) -> int:
    """Client backends of Mastodon's role that came through the primary's pool (PgBouncer logs
    in from the host's own address; the sampler itself comes from the operator's)."""
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
        "AND usename = 'mastodon' AND client_addr = %s",
        (PRIMARY,),
    ).fetchone()[0]


def test_200_clients_are_served_while_postgres_holds_at_most_the_pool(rendered):
    app = database_config(rendered[".env.production"])
    direct = database_config(
        migration_environment(rendered[".env.production"], rendered[".env.migration"])
    )["primary"]
    with connect(direct, autocommit=True) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS visits (client int, round int)")
        setup.execute("TRUNCATE visits")
    done, failures, seen = [], [], []
    stop = threading.Event()

    def client(number: int) -> None:
        try:
            with connect(app["primary"]) as conn:
                for round_ in range(3):
                    with conn.transaction():
                        conn.execute("SELECT pg_sleep(0.05)")
                        conn.execute("INSERT INTO visits VALUES (%s, %s)", (number, round_))
            done.append(number)
        except psycopg.Error as error:
            failures.append(str(error).splitlines()[0])

    def sampler() -> None:
        with connect(direct, autocommit=True) as conn:
            while not stop.is_set():
                seen.append(backends(conn))
                time.sleep(SAMPLE_EVERY)

    watcher = threading.Thread(target=sampler)
    watcher.start()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert failures == [] and sorted(done) == list(range(CLIENTS))
    with connect(direct, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM visits").fetchone() == (3 * CLIENTS,)
    assert len(seen) > 10  # the sampler watched the whole run
    assert max(seen) <= POOL_SIZE, f"{max(seen)} backends behind a pool of {POOL_SIZE}"
    assert max(seen) == POOL_SIZE  # and the pool was used to the full


def test_tls_on_both_sides_and_scram_without_clear_text(pooled, rendered):
    env = rendered[".env.production"]
    app = database_config(env)
    # Clients: TLS is required, and the primary's pool presents the certificate the stack's CA
    # issued for its address (what the streaming server verifies, NODE_EXTRA_CA_CERTS).
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        connect({**app["primary"], "sslmode": "disable"}).close()
    ca_file = pooled["dir"] / "ca.crt"
    ca_file.write_text(pooled["outputs"]["postgres_ca_cert"])
    with connect({**app["primary"], "sslmode": "verify-full"}, sslrootcert=str(ca_file)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="FATAL:  SASL authentication failed"):
        connect({**app["primary"], "password": "not-the-password-0000"}).close()
    # Servers: PgBouncer logs in over TLS, verifying PostgreSQL's certificate.
    with connect(database_config(migration_environment(env, rendered[".env.migration"]))[
        "primary"], autocommit=True) as conn:  # fmt: skip
        rows = conn.execute(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            "WHERE a.usename = 'mastodon' AND a.client_addr = %s",
            (PRIMARY,),
        ).fetchall()
    assert rows and all(ssl for (ssl,) in rows)
    for index in (1, 2, 3):
        ini = ssh(index, "cat /etc/pgbouncer/pgbouncer.ini").stdout
        assert "server_tls_sslmode = verify-full" in ini and "pool_mode = transaction" in ini
        assert "auth_type = scram-sha-256" in ini
        listing = ssh(index, "stat -c '%a %U' /etc/pgbouncer/userlist.txt; "
                      "cut -c1-31 /etc/pgbouncer/userlist.txt").stdout.split("\n")  # fmt: skip
        assert listing[0] == "600 postgres"
        assert listing[1] == '"mastodon" "SCRAM-SHA-256$4096:'
        # The very verifier PostgreSQL holds (SCRAM pass-through needs the same salt and keys).
        verifier = (
            'SELECT format(\'"%s" "%s"\', rolname, rolpassword) FROM pg_authid '
            "WHERE rolname = 'mastodon';"
        )
        same = ssh(index, "cd /tmp && runuser -u postgres -- psql -X -A -t | "
                   "cmp - /etc/pgbouncer/userlist.txt && echo same", stdin=verifier)  # fmt: skip
        assert same.stdout.strip() == "same", same.stderr
        # The password itself is in no file of PgBouncer's or PostgreSQL's, nor in a log, and
        # the probe's pass file is gone (grep reads it on stdin, never from a command line).
        found = ssh(
            index,
            "grep -rlF -f /dev/stdin /etc/pgbouncer /var/log/postgresql /etc/postgresql "
            "/var/lib/postgresql; ls -d /tmp/mastodon-data-pool-* 2>/dev/null; true",
            stdin=pooled["secrets"]["dbPassword"] + "\n",
        )
        assert found.stdout.split() == [], f"h{index}: {found.stdout}"


def running_limits(index: int) -> tuple[str, str]:
    """(max_client_conn of the host's pgbouncer.ini, the running PgBouncer's 'Max open files'
    soft and hard limit)."""
    script = (
        "sed -n 's/^max_client_conn = //p' /etc/pgbouncer/pgbouncer.ini; "
        "awk '/^Max open files/ {print $4, $5}' "
        '"/proc/$(head -n1 /var/run/postgresql/pgbouncer.pid)/limits"'
    )
    result = ssh(index, script)
    assert result.returncode == 0, result.stderr
    clients, files = result.stdout.splitlines()
    return clients, files


def test_pgbouncer_runs_with_the_checked_limits_and_a_new_limit_restarts_it(pooled):
    """The connection budget's values on the hosts: max_client_conn and the open-file limit of
    the running process are the settings the preview checked; a raised limit restarts it."""
    assert [running_limits(i) for i in (1, 2, 3)] == [("1000", "4096 4096")] * 3
    pooled["config"] = {**pooled["config"], "pgbouncerOpenFiles": 5000}
    outputs = applied(pooled["stack"], pooled["config"], pooled["secrets"])
    for name in ("mlg-h1", "mlg-h2", "mlg-h3"):
        report = outputs["steps"][f"pooler-{name}"]
        assert report["changed"] == ["pgbouncer restarted"], name
        assert (report["open_files"], report["probe"]) == (5000, "ok")
    assert [running_limits(i) for i in (1, 2, 3)] == [("1000", "5000 5000")] * 3


def test_a_new_db_password_reaches_every_pool(pooled, rendered):
    """dbPassword rotated: the primary step sets the new verifier, each pooler step (its stdin
    changed) waits until its host holds it, rewrites the auth file and reloads PgBouncer."""
    old = rendered[".env.production"]
    new_password = pooled["secrets"]["dbPassword"][::-1] + "-rotated"
    pooled["secrets"] = {**pooled["secrets"], "dbPassword": new_password}
    outputs = applied(pooled["stack"], pooled["config"], pooled["secrets"])
    for name in ("mlg-h1", "mlg-h2", "mlg-h3"):
        report = outputs["steps"][f"pooler-{name}"]
        assert report["changed"] == ["configuration written", "pgbouncer reloaded"], name
        assert report["probe"] == "ok"
    app = database_config({**old, "DB_PASS": new_password, "REPLICA_DB_PASS": new_password})
    for role in ("primary", "replica"):
        with connect(app[role], autocommit=True) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("mastodon",)
        with pytest.raises(psycopg.OperationalError, match="SASL authentication failed"):
            connect({**app[role], "password": old["DB_PASS"]}).close()


def test_pgbouncer_off_points_mastodon_at_postgres_and_leaves_the_pools_running(pooled):
    stack = pooled["stack"]
    stack.configure({**pooled["config"], "pgbouncer": False}, pooled["secrets"])
    printed = stack.up()
    changes = stack.last_changes()
    outputs = {**stack.outputs(), "steps": stack.step_reports()}
    env = outputs["mastodon_env"]
    assert (env["DB_PORT"], env["REPLICA_DB_PORT"]) == ("5432", "5432")
    assert "PREPARED_STATEMENTS" not in env and "REPLICA_PREPARED_STATEMENTS" not in env
    assert outputs["postgres"]["pool"] is None
    assert not [name for name in outputs["steps"] if name.startswith("pooler-")]
    # The three pooler steps go; each says on its host what it left (the engine prints a
    # delete's output twice: streamed and in its summary).
    assert changes.get("delete") == 3
    assert printed.count("PgBouncer is left running on this host") == 2 * 3
    with psycopg.connect(host=PRIMARY, port=6432, dbname="mastodon_production", user="mastodon",
                         password=env["DB_PASS"], sslmode="require",
                         connect_timeout=10) as conn:  # fmt: skip
        assert conn.execute("SELECT 1").fetchone() == (1,)  # until Mastodon's env changes
