"""A planned switchover on a lab of its own (mlso, hosts mode, primary + 2 replicas, PgBouncer
on each), through the engine: `mastodon-data switchover` under 8 clients that write through
Mastodon's env as it was before (lab/write_load.py) fails no client and loses no row; the old
primary streams from the new one without a rewind; the stack ends as after `failover`, with
nothing left for a refreshed preview. A target that cannot catch up in time undoes the
switchover, and no client fails. Then the failover time: the new primary's PostgreSQL
killed, `mastodon-data failover promote`, the first write accepted through the new env.
Figures go to results/switchover.json (ignored)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from labkit import primary_and_two_replicas, wait_until

from lab import namespaces as lab_hosts
from lab.bench_switchover import failover_time, switchover_under_load
from lab.write_load import TABLE, WriteLoad
from tests.fixtures import COMMAND

pytestmark = [pytest.mark.lab, pytest.mark.engine]
SWITCH_LAB = lab_hosts.Lab(
    prefix="mlso", subnet="10.238.0.0/24", state_dir=Path("/var/lib/mastodon-lab-switchover")
)
H1, H2, H3 = (SWITCH_LAB.host(i) for i in (1, 2, 3))
PSQL = "runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -X -A -t -d mastodon_production"
FIGURES: dict[str, object] = {}


def sql(host: lab_hosts.LabHost, statement: str) -> str:
    argv = SWITCH_LAB.ssh_command(host.address, f'{PSQL} -c "{statement}"')
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{statement!r} on {host.name}: {result.stderr}"
    return result.stdout.strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("switchover")
    with primary_and_two_replicas(SWITCH_LAB, "switchover", workdir, FIGURES) as stack:
        yield stack


def test_a_switchover_under_load_is_a_pause_not_errors(stack):
    env = stack.outputs()["mastodon_env"]
    assert (env["DB_HOST"], env["DB_PORT"]) == (H1.address, "6432")
    switched = switchover_under_load(stack, env, H2.name)
    FIGURES.update(switched["figures"])
    load, summary, outputs = switched["load"], switched["summary"], switched["outputs"]
    assert load.errors == []
    assert len(load.rows) > 100 and all(load.committed.values())  # every client wrote on
    # Every committed row is on the new primary, and no other.
    rows = sql(H2, f"SELECT client || ',' || n FROM {TABLE}").splitlines()
    assert {tuple(map(int, row.split(","))) for row in rows} == load.rows
    assert (summary["old_primary"], summary["switched_to"], summary["rewind"]) == (
        H1.name, H2.name, False,
    )  # fmt: skip
    assert summary["timeline"] == 2
    new_env = outputs["mastodon_env"]
    assert (new_env["DB_HOST"], new_env["REPLICA_DB_HOST"]) == (H2.address, H3.address)
    for replica in (H1, H3):  # the old primary and the other replica stream from the new one
        receiver = outputs["replication"][replica.name]["receiver"][0]
        assert (receiver["status"], receiver["sender_host"]) == ("streaming", H2.address)
    config = stack.config()
    assert [h["name"] for h in config["hosts"]] == [H2.name, H3.name, H1.name]
    assert config["replicaCount"] == "2"
    stack.preview("--refresh", "--expect-no-changes")


def test_the_old_env_still_writes_and_reads_after_the_switchover(stack):
    """A process restarted later gets the new env; one that was not still has the old
    DB_HOST (the old primary, now a replica): its pool sends DB_NAME to the new primary."""
    from lab.write_load import connect

    old_env = {**stack.outputs()["mastodon_env"], "DB_HOST": H1.address}
    with connect(old_env) as conn:
        assert conn.execute("SELECT host(inet_server_addr())").fetchone() == (H2.address,)
        conn.execute(f"INSERT INTO {TABLE} VALUES (99, 0)")
    wait_until(lambda: sql(H1, f"SELECT count(*) FROM {TABLE} WHERE client = 99") == "1", 30,
               "the row on the old primary, a replica now")  # fmt: skip
    reads = {**old_env, "DB_NAME": old_env["REPLICA_DB_NAME"]}
    with connect(reads) as conn:  # the read pool: the old primary's own server, in recovery
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_the_pools_reloaded_the_new_primarys_certificates(stack, tmp_path):
    """The up gave the new primary a CA and a certificate of its own; PgBouncer reloaded (not
    restarted) with them: its clients get the new certificate (verify-full with the exported
    CA), and a new server connection from the old primary's pool verifies the new primary."""
    from lab.write_load import connect

    outputs = stack.outputs()
    root = tmp_path / "ca.crt"
    root.write_text(outputs["postgres_ca_cert"])
    env = outputs["mastodon_env"]
    with psycopg.connect(
        host=env["DB_HOST"], port=env["DB_PORT"], dbname=env["DB_NAME"], user=env["DB_USER"],
        password=env["DB_PASS"], sslmode="verify-full", sslrootcert=str(root), connect_timeout=10,
    ) as conn:  # fmt: skip
        assert conn.execute("SELECT host(inet_server_addr())").fetchone() == (H2.address,)
    console = f"{PSQL.rsplit(' -d ', 1)[0]} -h /var/run/postgresql -p 6432 -U pgbouncer pgbouncer"
    argv = SWITCH_LAB.ssh_command(H1.address, f'{console} -c "RECONNECT {env["DB_NAME"]}"')
    assert subprocess.run(argv, capture_output=True, text=True, timeout=60).returncode == 0
    with connect({**env, "DB_HOST": H1.address}) as conn:  # a new server connection to H2
        assert conn.execute("SELECT host(inet_server_addr())").fetchone() == (H2.address,)


def test_a_target_that_cannot_catch_up_undoes_the_switchover_and_fails_no_client(stack):
    """H3's replay paused, `switchover H3 --catch-up-wait 3` under 4 writing clients: H3 is
    not past the old primary's shutdown checkpoint in time, so H2 starts again as the primary,
    the pools resume, the command exits 1 naming it; the clients saw a pause, not an error,
    every row is on H2, the stack is unchanged and H3 streams from H2 again."""
    env = stack.outputs()["mastodon_env"]
    hosts = [h["name"] for h in stack.config()["hosts"]]
    sql(H2, f"TRUNCATE {TABLE}")
    sql(H3, "SELECT pg_wal_replay_pause()")
    try:
        with WriteLoad(env, clients=4) as load:
            time.sleep(1)
            argv = [COMMAND, "switchover", "--stack", stack.name, "--cwd", str(stack.workdir),
                    H3.name, "--catch-up-wait", "3"]  # fmt: skip
            result = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                                    env=stack.env())  # fmt: skip
            time.sleep(1)
    finally:
        sql(H3, "SELECT pg_wal_replay_resume()")
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"the switchover was undone ({H2.name} is the primary, the pools resumed)" in (
        result.stderr
    )
    assert load.errors == [] and all(load.committed.values())
    rows = sql(H2, f"SELECT client || ',' || n FROM {TABLE}").splitlines()
    assert {tuple(map(int, row.split(","))) for row in rows} == load.rows
    assert sql(H2, "SELECT pg_is_in_recovery()") == "f"
    assert [h["name"] for h in stack.config()["hosts"]] == hosts
    wait_until(lambda: sql(H3, "SELECT status FROM pg_stat_wal_receiver") == "streaming", 60,
               "H3 streaming from H2 again")  # fmt: skip
    FIGURES["undone_longest_write_pause_s"] = load.longest_pause_s


def test_failover_time_from_the_primarys_death_to_the_first_write(stack):
    env = stack.outputs()["mastodon_env"]
    figures = failover_time(stack, SWITCH_LAB, env, dead=2, target=3)
    FIGURES.update(figures)
    assert figures["failover_new_db_host"] == H3.address
    assert 0 < figures["failover_first_write_s"] <= figures["failover_command_s"] + 5
