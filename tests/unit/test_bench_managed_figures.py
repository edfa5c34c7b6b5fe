"""The managed benchmark's reading of what it recorded (lab/bench_managed/figures.py): the
provider's waits from the stand-in's request log, a takeover from the writer's lines, pgbench's
throughput and `pulumi up`'s resource counts; and what the stand-in logs of an answer."""

from __future__ import annotations

import pytest

from lab.bench_managed.figures import (
    pgbench_tps,
    provider_waits,
    resource_summary,
    takeover_figures,
    waits_in_series,
)
from lab.standin.server import answered

PG, VK, RO = "pg-1111", "vk-2222", "ro-3333"


def entry(t, method, path, status=200, kind=None, ident=None, engine=None, state=None):
    logged = {"t": t, "method": method, "path": path, "status": status}
    if kind:
        logged["answered"] = {"kind": kind, "id": ident, "engine": engine, "status": state}
    return logged


# A first `up` as the provider makes it: both clusters POSTed at once, polled every 15 s; the
# read-only node refused (412) until its cluster is online, then polled by name.
LOG = [
    entry(100.0, "POST", "/v2/databases", 201, "database", PG, "pg", "creating"),
    entry(100.1, "POST", "/v2/databases", 201, "database", VK, "valkey", "creating"),
    entry(115.0, "GET", f"/v2/databases/{PG}", 200, "database", PG, "pg", "creating"),
    entry(115.1, "GET", f"/v2/databases/{VK}", 200, "database", VK, "valkey", "online"),
    entry(115.2, "GET", f"/v2/databases/{VK}", 200, "database", VK, "valkey", "online"),
    entry(120.0, "POST", f"/v2/databases/{PG}/replicas", 412),
    entry(130.0, "GET", f"/v2/databases/{PG}", 200, "database", PG, "pg", "online"),
    entry(130.1, "GET", f"/v2/databases/{PG}", 200, "database", PG, "pg", "online"),
    entry(130.2, "GET", f"/v2/databases/{PG}/ca", 200),
    entry(131.0, "POST", f"/v2/databases/{PG}/replicas", 201, "replica", RO, None, "forking"),
    entry(146.0, "GET", f"/v2/databases/{PG}/replicas/ro", 200, "replica", RO, None, "forking"),
    entry(161.0, "GET", f"/v2/databases/{PG}/replicas/ro", 200, "replica", RO, None, "online"),
    entry(161.1, "GET", f"/v2/databases/{PG}/replicas/ro", 200, "replica", RO, None, "online"),
]


def test_each_post_to_the_poll_that_saw_it_online():
    waits = {w["id"]: w for w in provider_waits(LOG)}
    assert {k: (w["seconds"], w["polls"], w["refused_before"]) for k, w in waits.items()} == {
        PG: (30.0, 2, 0),
        VK: (15.0, 1, 0),
        RO: (30.0, 2, 1),
    }
    assert (waits[PG]["posted"], waits[PG]["online_seen"]) == (100.0, 130.0)


def test_a_wait_never_seen_online_has_no_seconds():
    [wait] = provider_waits([LOG[0], LOG[2]])
    assert (wait["id"], wait["seconds"], wait["polls"]) == (PG, None, 1)


def test_the_waits_in_series_and_their_floor():
    assert waits_in_series(provider_waits(LOG)) == {
        "pg_cluster_wait_s": 30.0,
        "read_only_node_wait_s": 30.0,
        "read_only_node_refused_posts": 1,
        "provider_waits_in_series_s": 60.0,
        "provider_waits_floor_s": 30,
    }


def test_a_read_only_node_of_another_cluster_is_refused():
    other = [e if e["method"] != "POST" or "replicas" not in e["path"] else
             {**e, "path": "/v2/databases/elsewhere/replicas"} for e in LOG]  # fmt: skip
    with pytest.raises(ValueError, match="is not of cluster pg-1111"):
        waits_in_series(provider_waits(other))


def test_the_stand_in_logs_what_it_answered_of_a_cluster_or_node():
    cluster = {"database": {"id": PG, "engine": "pg", "status": "online", "name": "x"}}
    assert answered(cluster) == {
        "answered": {"kind": "database", "id": PG, "engine": "pg", "status": "online"}
    }
    node = {"replica": {"id": RO, "status": "forking"}}
    assert answered(node)["answered"] == {"kind": "replica", "id": RO, "engine": None,
                                          "status": "forking"}  # fmt: skip
    assert answered({"databases": [cluster["database"]]}) == {}
    assert answered(None) == {}


def writer_lines(killed: float) -> list[dict]:
    lines = [{"committed": n, "at": killed - 1 + n / 10} for n in range(1, 10)]  # 1-9 before
    lines += [{"committed": 10, "at": killed + 0.05}]  # in flight at the kill
    lines += [{"error": "OperationalError", "at": killed + 2.0}]
    lines += [{"error": "OperationalError", "at": killed + 3.0}]
    lines += [{"committed": n, "at": killed + 4 + n / 10} for n in range(11, 15)]
    return lines


def test_a_takeover_resumed_and_nothing_lost():
    lines = writer_lines(1000.0) + [{"present": list(range(1, 15)), "at": 1010.0}]
    assert takeover_figures(lines, 1000.0) == {
        "writes_resumed_s": 5.1,
        "first_error_after_kill_s": 2.0,
        "committed_before_kill": 9,
        "of_them_present": 9,
        "rows_lost": 0,
        "first_error": "OperationalError",
    }


def test_a_takeover_that_lost_the_tail():
    present = [n for n in range(1, 15) if n not in (8, 9, 10)]
    lines = writer_lines(1000.0) + [{"present": present, "at": 1010.0}]
    figures = takeover_figures(lines, 1000.0)
    assert (figures["of_them_present"], figures["rows_lost"]) == (7, 2)


def test_a_takeover_without_an_error_or_a_resumed_write_is_refused():
    calm = [{"committed": n, "at": 1000.0 + n} for n in range(1, 5)] + [{"present": [1]}]
    with pytest.raises(ValueError, match="no error after the kill"):
        takeover_figures(calm, 1000.5)
    stuck = writer_lines(1000.0)[:12] + [{"present": [1]}]
    with pytest.raises(ValueError, match="no write succeeded"):
        takeover_figures(stuck, 1000.0)


PGBENCH_OUTPUT = """pgbench (15.14 (Debian 15.14-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 1
query mode: simple
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 15 s
number of transactions actually processed: 61234
number of failed transactions: 0 (0.000%)
latency average = 1.959 ms
initial connection time = 85.123 ms
tps = 4083.441250 (without initial connection time)
"""


def test_pgbench_tps():
    assert pgbench_tps(PGBENCH_OUTPUT) == 4083.44125
    with pytest.raises(ValueError, match="no tps line"):
        pgbench_tps("pgbench: error: connection to server failed")


def test_resource_summary_of_an_up():
    output = (
        'Updating (bench-managed):\n\nOutputs:\n    host: "x"\n\nResources:\n'
        "    + 18 created\n    2 unchanged\n\nDuration: 1m2s\n"
    )
    assert resource_summary(output) == "18 created, 2 unchanged"
    assert resource_summary("Resources:\n    20 unchanged\n\nDuration: 9s\n") == "20 unchanged"
    assert resource_summary("error: no resources") == ""
