"""Failover on a lab of its own: the primary dies (SIGKILL), scripts/failover.py promotes a
replica and repoints the other; no committed row that reached the replicas is lost; then the old
primary rejoins as a replica through pg_rewind. Figures go to results/failover.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import apply_hosts
import lab as lab_hosts
import pytest
import yaml
from labkit import ROOT_DIR, lab_unavailable, new_secrets, wait_until, write_figures

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


def failover(*args: str, files: dict) -> tuple[dict, dict]:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT_DIR / "scripts" / "failover.py"),
            "--stack-file",
            str(files["stack"]),
            "--secrets-file",
            str(files["secrets"]),
            "--known-hosts",
            str(FAILOVER_LAB.known_hosts),
            "--write",
            str(files["new"]),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stderr[result.stderr.index("{\n") :])
    return summary, json.loads(result.stdout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    lab_hosts.down(FAILOVER_LAB)
    work = tmp_path_factory.mktemp("failover")
    try:
        lab_hosts.up(FAILOVER_LAB, 3)
        values = new_secrets(FAILOVER_LAB)
        secrets_file = work / "secrets.json"
        secrets_file.touch(mode=0o600)
        secrets_file.write_text(json.dumps(values))
        stack = work / "Pulumi.failover.yaml"
        config = lab_hosts.stack_config(FAILOVER_LAB, 2, 3)
        stack.write_text(yaml.safe_dump({"config": config}))
        apply_hosts.apply(stack, values, FAILOVER_LAB.known_hosts)
        yield {"stack": stack, "secrets": secrets_file, "new": work / "Pulumi.new.yaml"}
    finally:
        lab_hosts.down(FAILOVER_LAB)
        write_figures("failover", FIGURES)


def test_promote_a_replica_when_the_primary_is_lost(files):
    sql(1, "CREATE TABLE ledger (id int PRIMARY KEY)")
    sql(1, "INSERT INTO ledger SELECT generate_series(1, 1000)")
    wait_until(lambda: sql(3, "SELECT count(*) FROM ledger") == "1000", 30, "rows on h3")
    ssh(1, "kill -9 $(head -1 /var/lib/postgresql/15/main/postmaster.pid)")
    start = time.monotonic()
    summary, outputs = failover("promote", "mlabp-h2", files=files)
    FIGURES["promote_and_repoint_s"] = round(time.monotonic() - start, 2)
    FIGURES["pg_promote_s"] = summary["promote_s"]
    assert outputs["mastodon_env"]["DB_HOST"] == "10.248.0.12"
    assert outputs["mastodon_env"]["REPLICA_DB_HOST"] == "10.248.0.13"
    assert summary["timeline"] == 2
    receiver = outputs["replication"]["mlabp-h3"]["receiver"][0]
    assert receiver["status"] == "streaming" and receiver["sender_host"] == "10.248.0.12"
    sql(2, "INSERT INTO ledger SELECT generate_series(1001, 1500)")
    wait_until(lambda: sql(3, "SELECT count(*) FROM ledger") == "1500", 30, "new rows on h3")
    assert sql(2, "SELECT count(*) FROM ledger") == "1500"  # rows lost: 0
    files["stack"] = files["new"]


def test_old_primary_rejoins_as_a_replica_through_pg_rewind(files):
    start = time.monotonic()
    summary, outputs = failover("rejoin", "mlabp-h1", files=files)
    FIGURES["rejoin_with_pg_rewind_s"] = round(time.monotonic() - start, 2)
    report = json.loads(outputs["steps"]["replica-mlabp-h1"])
    assert "rewound (former primary)" in report["changed"]
    receiver = outputs["replication"]["mlabp-h1"]["receiver"][0]
    assert receiver["status"] == "streaming" and receiver["sender_host"] == "10.248.0.12"
    sql(2, "INSERT INTO ledger VALUES (1501)")
    wait_until(lambda: sql(1, "SELECT count(*) FROM ledger") == "1501", 30, "rows on h1")
    assert os.path.exists(files["new"])
