"""Each replica's own slot on the primary (host/replica.py ensure_slot) and the pruning of the
others' (host/slots.py): what they run and how they read the answers. Pure parts; the lab tests
(tests/lab/test_replication.py) run them for real."""

from __future__ import annotations

import subprocess

import common
import pytest
import replica
import slots
import standby

from tests.fixtures import REPLICA_PARAMS as PARAMS


def answering(monkeypatch, stdout: str, returncode: int = 0, stderr: str = "") -> list:
    calls = []

    def run(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, returncode, stdout, stderr)

    monkeypatch.setattr(replica, "run", run)
    return calls


@pytest.mark.parametrize(
    ("stdout", "changed"),
    [
        ("0\nmdata_db2\n", "slot mdata_db2 created"),
        ("0\n\n", None),
        ("1\nmdata_db2\n", "slot mdata_db2 recreated (it was invalidated: this replica re-seeds)"),
    ],
)
def test_the_replica_makes_its_slot_over_an_ordinary_tls_connection(monkeypatch, stdout, changed):
    calls = answering(monkeypatch, stdout)
    assert replica.ensure_slot(PARAMS) == changed
    (argv,) = calls
    assert argv[:4] == ["runuser", "-u", "postgres", "--"]
    assert argv[-1] == f"{standby.conninfo(PARAMS)} dbname=postgres"  # no password in it
    sql = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-c"]
    assert sql == replica.slot_sql("mdata_db2")
    assert "wal_status = 'lost' AND NOT active" in sql[0]  # only an invalidated, idle slot goes
    assert "pg_create_physical_replication_slot('mdata_db2')" in sql[1]


def test_a_refused_slot_connection_says_what_to_run(monkeypatch):
    answering(monkeypatch, "", 2, 'FATAL:  no pg_hba.conf entry for host "10.0.0.2"')
    with pytest.raises(common.HostError, match="run the primary step again"):
        replica.ensure_slot(PARAMS)


class FakeCluster:
    """Answers the slots step's SQL from a script of outcomes (an exception or output)."""

    def __init__(self, outcomes: list):
        self.outcomes, self.statements = list(outcomes), []

    def sql(self, statement: str) -> str:
        self.statements.append(statement)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def sql_json(self, query: str) -> list:
        self.statements.append(query)
        return self.outcomes.pop(0)


def test_only_slots_of_replicas_no_longer_configured_are_stale():
    rows = [{"slot_name": n} for n in ("mdata_db2", "mdata_db3", "mdata_db4")]
    assert slots.stale_slots(FakeCluster([rows]), ["db2", "db4"]) == ["mdata_db3"]


def test_a_slot_taken_again_by_a_reconnecting_replica_is_dropped_on_a_later_try(monkeypatch):
    monkeypatch.setattr(slots.time, "sleep", lambda seconds: None)
    busy = common.HostError('ERROR:  replication slot "mdata_db3" is active for PID 42')
    cluster = FakeCluster([busy, ""])
    slots.drop_slot(cluster, "mdata_db3")
    assert len(cluster.statements) == 2
    # The walsender is ended and waited for, then the slot dropped, in one session.
    ended, dropped = cluster.statements[0].split("\n")
    assert "pg_terminate_backend(active_pid, 5000)" in ended
    assert "pg_drop_replication_slot(slot_name)" in dropped


def test_a_slot_still_taken_after_the_wait_or_another_error_stops_the_step(monkeypatch):
    monkeypatch.setattr(slots.time, "sleep", lambda seconds: None)
    busy = common.HostError('replication slot "mdata_db3" is active for PID 42')
    with pytest.raises(common.HostError, match="could not be dropped within 0 s"):
        slots.drop_slot(FakeCluster([busy, busy]), "mdata_db3", wait=0)
    other = common.HostError("connection refused")
    cluster = FakeCluster([other])
    with pytest.raises(common.HostError, match="connection refused"):
        slots.drop_slot(cluster, "mdata_db3")
    assert len(cluster.statements) == 1  # no retry for what waiting cannot cure
