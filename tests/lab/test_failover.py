"""Failover on a lab of its own: the primary dies (SIGKILL), `mastodon-data failover` promotes a
replica and `pulumi up` of the stack with the new order repoints the other; no committed row
that reached the replicas is lost; then the old primary rejoins as a replica through pg_rewind.
Figures go to results/failover.json (ignored)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from labkit import primary_and_two_replicas, wait_until

from lab import namespaces as lab_hosts
from lab.stack import LabStack
from tests.fixtures import COMMAND

pytestmark = pytest.mark.lab
FAILOVER_LAB = lab_hosts.Lab(
    prefix="mlabp", subnet="10.248.0.0/24", state_dir=Path("/var/lib/mastodon-lab-failover")
)
PSQL = "runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -X -A -t -d mastodon_production"
FIGURES: dict[str, object] = {}


def ssh(index: int, command: str) -> str:
    argv = FAILOVER_LAB.ssh_command(FAILOVER_LAB.host(index).address, command)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{command!r} on h{index}: {result.stderr}"
    return result.stdout.strip()


def sql(index: int, statement: str) -> str:
    return ssh(index, f"{PSQL} -c {json.dumps(statement)}")


def failover(stack: LabStack, *args: str) -> tuple[dict, dict]:
    """`mastodon-data failover` as an operator runs it, on the failover lab's stack."""
    result = subprocess.run(
        [COMMAND, "failover", "--stack", stack.name, "--cwd", str(stack.workdir), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=stack.env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stderr[result.stderr.index("{\n") :])
    return summary, json.loads(result.stdout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("failover")
    with primary_and_two_replicas(FAILOVER_LAB, "failover", workdir, FIGURES) as stack:
        yield stack


def test_promote_a_replica_when_the_primary_is_lost(stack):
    sql(1, "CREATE TABLE ledger (id int PRIMARY KEY)")
    sql(1, "INSERT INTO ledger SELECT generate_series(1, 1000)")
    wait_until(lambda: sql(3, "SELECT count(*) FROM ledger") == "1000", 30, "rows on h3")
    ssh(1, "kill -9 $(head -1 /var/lib/postgresql/15/main/postmaster.pid)")
    start = time.monotonic()
    summary, outputs = failover(stack, "promote", "mlabp-h2")
    FIGURES["promote_and_repoint_s"] = round(time.monotonic() - start, 2)
    FIGURES["pg_promote_s"] = summary["promote_s"]
    assert outputs["mastodon_env"]["DB_HOST"] == "10.248.0.12"
    assert outputs["mastodon_env"]["REPLICA_DB_HOST"] == "10.248.0.13"
    assert summary["timeline"] == 2
    receiver = outputs["replication"]["mlabp-h3"]["receiver"][0]
    assert receiver["status"] == "streaming" and receiver["sender_host"] == "10.248.0.12"
    # Mastodon's env reaches the new primary through its pool: PgBouncer there now trusts the
    # CA the promoted host made for its new certificate (verify-full on the server side).
    env = outputs["mastodon_env"]
    with psycopg.connect(
        host=env["DB_HOST"], port=env["DB_PORT"], dbname=env["DB_NAME"], user=env["DB_USER"],
        password=env["DB_PASS"], sslmode=env["DB_SSLMODE"], connect_timeout=10,
        prepare_threshold=None, autocommit=True,
    ) as conn:  # fmt: skip
        assert (env["DB_PORT"], env["PREPARED_STATEMENTS"]) == ("6432", "false")
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    sql(2, "INSERT INTO ledger SELECT generate_series(1001, 1500)")

    wait_until(lambda: sql(3, "SELECT count(*) FROM ledger") == "1500", 30, "new rows on h3")
    assert sql(2, "SELECT count(*) FROM ledger") == "1500"  # rows lost: 0
    config = stack.config()
    assert [h["name"] for h in config["hosts"]] == ["mlabp-h2", "mlabp-h3", "mlabp-h1"]
    assert config["replicaCount"] == "1"


def test_old_primary_rejoins_as_a_replica_through_pg_rewind(stack):
    start = time.monotonic()
    summary, outputs = failover(stack, "rejoin", "mlabp-h1")
    FIGURES["rejoin_with_pg_rewind_s"] = round(time.monotonic() - start, 2)
    assert "rewound (former primary)" in summary["changed"]
    receiver = outputs["replication"]["mlabp-h1"]["receiver"][0]
    assert receiver["status"] == "streaming" and receiver["sender_host"] == "10.248.0.12"
    sql(2, "INSERT INTO ledger VALUES (1501)")
    wait_until(lambda: sql(1, "SELECT count(*) FROM ledger") == "1501", 30, "rows on h1")
    assert "reseedReplicas" not in stack.config()  # asked for once, then removed
    stack.preview("--expect-no-changes")
