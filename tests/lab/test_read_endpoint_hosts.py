"""Hosts mode's read endpoint as the operator runs it: Debian's HAProxy on an app server (a lab
host outside the stack) with the stack's `read_endpoint_haproxy` output as its configuration,
and Mastodon's REPLICA_DB_* from the stack's env. New connections spread over the replicas; a
replica whose PostgreSQL dies leaves within HAProxy's check bound and comes back when it
streams again; with no replica left, reads go to the primary. Figures go to
results/read_endpoint_hosts.json (ignored)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labkit import applied, new_secrets, own_lab, write_figures

from lab import namespaces as lab_hosts
from lab.stack import LabStack
from tests.fixtures import COMMAND

pytestmark = pytest.mark.lab
LAB = lab_hosts.Lab(
    prefix="mlrh", subnet="10.229.0.0/24", state_dir=Path("/var/lib/mastodon-lab-read-hosts")
)
ROOT = Path(__file__).resolve().parents[2]
APP = LAB.host(4)  # the app server: outside the stack, allowed in like Mastodon's servers
PRIMARY, REPLICAS = LAB.host(1).address, [LAB.host(2).address, LAB.host(3).address]
FIGURES: dict[str, object] = {}
# Run on the app server with {"env": ..., "call": [name, *args]} on stdin: the read endpoint
# probes (lab/read_endpoint_probe.py) as Mastodon connects.
CLIENT = """
import json, sys
from lab import read_endpoint_probe as probe
asked = json.load(sys.stdin)
name, *args = asked["call"]
answer = getattr(probe, name)(asked["env"], *args)
print(json.dumps(answer if name == "probes_over" else [dict(answer[0]), answer[1]]))
"""


def on_app_server(env: dict, *call) -> object:
    result = subprocess.run(
        ["ip", "netns", "exec", APP.netns, sys.executable, "-c", CLIENT],
        input=json.dumps({"env": env, "call": list(call)}),
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ssh(index: int, command: str) -> str:
    argv = LAB.ssh_command(LAB.host(index).address, command)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{command!r} on h{index}: {result.stderr}"
    return result.stdout.strip()


def kill_postgres(index: int) -> None:
    ssh(index, "pg_ctlcluster 15 main stop -m immediate")  # no checkpoint: a crash


def start_postgres(index: int) -> None:
    ssh(index, "pg_ctlcluster 15 main start")


def spread(env: dict, count: int) -> tuple[dict, int]:
    seen, failures = on_app_server(env, "spread", count)
    return seen, failures


def wait_spread(env: dict, want: set, limit: float) -> float:
    """Seconds until 20 new connections land on exactly the addresses `want`, none failing."""
    start = time.monotonic()
    while True:
        seen, failures = spread(env, 20)
        if set(seen) == want and failures == 0:
            return round(time.monotonic() - start, 2)
        assert time.monotonic() - start < limit, f"after {limit} s: {seen}, {failures} failed"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    work = tmp_path_factory.mktemp("read-hosts")
    with own_lab(LAB, 4):
        stack = LabStack("readhosts", work / "stack")
        stack.prepare()
        config = {**lab_hosts.stack_config(LAB, 2, 3, sources_for=4), "replicaLoadBalancer": True}
        outputs = applied(stack, config, new_secrets(LAB))
        haproxy_cfg, pid_file = work / "haproxy.cfg", work / "haproxy.pid"
        haproxy_cfg.write_text(outputs["read_endpoint_haproxy"])
        subprocess.run(
            ["ip", "netns", "exec", APP.netns, "haproxy", "-D", "-p", str(pid_file),
             "-f", str(haproxy_cfg)],
            check=True, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        try:
            yield {"env": outputs["mastodon_env"], "outputs": outputs, "stack": stack}
        finally:
            for pid in pid_file.read_text().split() if pid_file.exists() else []:
                os.kill(int(pid), 15)
            write_figures("read_endpoint_hosts", FIGURES)


def test_the_env_reads_through_haproxy_on_the_app_server(endpoint):
    env = endpoint["env"]
    assert (env["REPLICA_DB_HOST"], env["REPLICA_DB_PORT"]) == ("127.0.0.1", "6432")
    config = endpoint["outputs"]["read_endpoint_haproxy"]
    for address in REPLICAS:
        assert f"{address}:6432 check port 8008" in config
    assert f"{PRIMARY}:6432 backup" in config
    FIGURES["first_healthy_s"] = wait_spread(env, set(REPLICAS), 30)


def test_new_connections_spread_evenly_over_the_replicas(endpoint):
    seen, failures = spread(endpoint["env"], 100)
    assert failures == 0 and set(seen) == set(REPLICAS), seen
    assert all(40 <= seen[a] <= 60 for a in REPLICAS), seen  # +-20 % of a half


def test_a_dead_replica_leaves_and_comes_back(endpoint):
    env = endpoint["env"]
    kill_postgres(3)
    FIGURES["dead_replica_left_s"] = wait_spread(env, {REPLICAS[0]}, 15)
    seen, failures = spread(env, 50)
    assert (seen, failures) == ({REPLICAS[0]: 50}, 0)
    start_postgres(3)
    FIGURES["restarted_replica_back_s"] = wait_spread(env, set(REPLICAS), 30)


def test_with_no_replica_left_reads_go_to_the_primary(endpoint):
    env = endpoint["env"]
    kill_postgres(2)
    kill_postgres(3)
    try:
        FIGURES["reads_on_the_primary_s"] = wait_spread(env, {PRIMARY}, 15)
        assert spread(env, 20) == ({PRIMARY: 20}, 0)
    finally:
        start_postgres(2)
        start_postgres(3)
    wait_spread(env, set(REPLICAS), 30)


def test_a_failover_keeps_the_endpoint_right_with_no_change_of_haproxy(endpoint):
    """The primary dies; `mastodon-data failover` promotes h2: the running HAProxy (the
    configuration of before) sends reads to h3 alone, h2 now answering 503 as the primary."""
    stack = endpoint["stack"]
    kill_postgres(1)
    result = subprocess.run(
        [COMMAND, "failover", "--stack", stack.name, "--cwd", str(stack.workdir),
         "promote", LAB.host(2).name],
        capture_output=True, text=True, timeout=600, env=stack.env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    env = json.loads(result.stdout)["mastodon_env"]
    assert (env["DB_HOST"], env["REPLICA_DB_HOST"]) == (REPLICAS[0], "127.0.0.1")
    FIGURES["reads_after_failover_s"] = wait_spread(env, {REPLICAS[1]}, 30)
    assert spread(env, 30) == ({REPLICAS[1]: 30}, 0)
