"""Managed Valkey on the DigitalOcean stand-in, through the real engine and provider: the
project's `ManagedValkey` component twice (tests/lab/valkey_program: Sidekiq's queues with
noeviction, Mastodon's cache with allkeys-lru, each with a standby) goes up and refreshes with
no change; from the app side the emitted rediss:// URLs work with TLS verification, a write
reaches the standby, plain TCP gets nowhere, the eviction policies are the ones asked for; an
address outside the trusted sources cannot reach 25061; destroy leaves no host, process or filter.

Lab `mlvk`: public network 10.241.70.0/24, VPC 10.240.70.0/24."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labkit import process_marks
from standinkit import PROBE, program_stack, standin_account

from lab.stack import LabStack
from lab.standin.service import StandInLab
from lab.system import pid_alive

LAB = StandInLab(
    prefix="mlvk",
    public_network="10.241.70.0/24",
    vpc_pool=("10.240.70.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-valkey-test"),
)
pytestmark = [pytest.mark.engine, pytest.mark.lab]
STACK = "vkt"
PROGRAM = Path(__file__).parent / "valkey_program" / "__main__.py"
OUTSIDER = "10.241.70.250"  # on the public network, in no trusted source
# Run on the app side with the URL on stdin: TLS verified against the system bundle and the
# host name checked; writes a key, reads it back on the standby's name (argv[2]), and answers
# the policy.
CLIENT = """
import json, sys, time, urllib.parse, redis
url, key, standby_host = sys.stdin.read().strip(), sys.argv[1], sys.argv[2]
options = dict(ssl_cert_reqs="required", ssl_check_hostname=True, socket_timeout=5,
               decode_responses=True)
primary = redis.Redis.from_url(url, **options)
primary.set(key, "written")
parts = urllib.parse.urlsplit(url)
standby = redis.Redis(host=standby_host, port=parts.port, username=parts.username,
                      password=urllib.parse.unquote(parts.password), ssl=True, **options)
deadline = time.monotonic() + 10
while standby.get(key) != "written" and time.monotonic() < deadline:
    time.sleep(0.1)
print(json.dumps({
    "policy": primary.config_get("maxmemory-policy")["maxmemory-policy"],
    "role": primary.info("replication")["role"],
    "replicas": primary.info("replication")["connected_slaves"],
    "standby_role": standby.info("replication")["role"],
    "standby_has_key": standby.get(key),
}))
"""
# Run on the app side: a plain (no TLS) client on both ports of the host named by argv[1].
PLAIN = """
import json, sys, redis
host, password = sys.argv[1], sys.stdin.read().strip()
answers = {}
for port in (25060, 25061):
    try:
        redis.Redis(host=host, port=port, password=password, socket_timeout=5).ping()
        answers[port] = "answered"
    except redis.ConnectionError as err:
        answers[port] = "refused" if "refused" in str(err) else "closed"
print(json.dumps(answers))
"""


def valkey_stack(workdir: Path, client) -> LabStack:
    """The test's program in `workdir`, its stack made, its provider on the stand-in."""
    config = {"vpcCidr": "10.240.70.0/24", "appTag": "mlvk-app",
              "appCidrs": [f"{LAB.operator_address}/32", "10.240.70.1/32"]}  # fmt: skip
    return program_stack(LAB, client, STACK, workdir, PROGRAM, config, timeout=300)


def app_side(script: str, stdin: str, *argv: str) -> dict:
    command = LAB.hosts.app_command(sys.executable, "-c", script, *argv)
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def probe(ns: str, address: str, port: int) -> str:
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, address, str(port), "2"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()


def test_valkey_queues_and_cache_up_refreshed_reached_filtered_and_destroyed(tmp_path):
    with standin_account(LAB) as (client, _key):
        client.token = f"dop_v1_standin-{STACK}"
        stack = valkey_stack(tmp_path / "stack", client)
        started = time.monotonic()
        stack.up()
        up_seconds = time.monotonic() - started
        out = stack.outputs()
        stack.preview("--refresh", "--expect-no-changes")

        clusters = {c["name"]: c for c in client.call("GET", "/v2/databases")["databases"]}
        assert sorted(clusters) == ["mastodon-data-vkt-valkey", "mastodon-data-vkt-valkey-cache"]
        queues = clusters["mastodon-data-vkt-valkey"]
        cache = clusters["mastodon-data-vkt-valkey-cache"]
        for cluster in (queues, cache):
            assert (cluster["status"], cluster["engine"], cluster["version"]) == (
                "online",
                "valkey",
                "8",
            )
        password = queues["connection"]["password"]
        host = f"private-{queues['connection']['host']}"
        assert out["redis"] == {"host": host, "port": 25061}
        assert out["redis_url"] == f"rediss://default:{password}@{host}:25061"
        assert out["redis_cache"]["host"] == f"private-{cache['connection']['host']}"

        # The emitted URLs, verified TLS, from the app side; the write reaches the standby.
        for url, cluster, policy in ((out["redis_url"], queues, "noeviction"),
                                     (out["cache_redis_url"], cache, "allkeys-lru")):  # fmt: skip
            standby = cluster["standby_private_connection"]["host"]
            assert app_side(CLIENT, url, "mlvk-key", standby) == {
                "policy": policy,
                "role": "master",
                "replicas": 1,
                "standby_role": "slave",
                "standby_has_key": "written",
            }
        # No plain TCP: 25060 is closed, 25061 speaks TLS only.
        assert app_side(PLAIN, password, host) == {"25060": "refused", "25061": "closed"}

        # The config as the provider read it back, and on the nodes' servers.
        assert (
            client.call("GET", f"/v2/databases/{cache['id']}/config")["config"][
                "valkey_maxmemory_policy"
            ]
            == "allkeys-lru"
        )
        records = json.loads((LAB.state_dir / "state.json").read_text())["databases"]
        for cluster, policy in ((queues, "noeviction"), (cache, "allkeys-lru")):
            for node in records[cluster["id"]]["nodes"]:
                with LAB.hosts.admin(records[cluster["id"]], node) as admin:
                    assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": policy}
                    assert admin.config_get("port") == {"port": "0"}

        # Trusted sources: an outsider cannot reach 25061 on any node.
        nodes = [n for c in (queues, cache) for n in records[c["id"]]["nodes"]]
        outsider = LAB.hosts.add_probe(1, "pub", OUTSIDER, 24)
        assert {probe(outsider, n["public"], 25061) for n in nodes} == {"timeout"}

        pid_files = [LAB.hosts.valkey_dir(n) / "valkey.pid" for n in nodes]
        pids = [pid_alive(f) for f in pid_files]
        assert all(pids), pids
        marks = process_marks(pids)
        stack.destroy()
        deadline = time.monotonic() + 60
        while client.call("GET", "/v2/databases")["databases"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert client.call("GET", "/v2/databases")["databases"] == []
        assert process_marks(pids) & marks == set()  # no valkey-server left
        left = [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                text=True).stdout.split() if ns.startswith("mlvk-d")]  # fmt: skip
        assert left == []  # the nodes and their packet filters
        assert list((LAB.state_dir / "droplets").iterdir()) == []  # the nodes' files
        assert "ondigitalocean" not in LAB.hosts.hosts_file.read_text()
        print(f"valkey stack (two clusters with standbys) up in {up_seconds:.0f} s")
