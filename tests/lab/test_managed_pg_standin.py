"""Managed PostgreSQL on the DigitalOcean stand-in, through the real engine and provider: a small
stack of the test's own (tests/lab/managed_pg_program: a cluster with a standby, a database, a
user, trusted sources, the CA) goes up, refreshes with no change, is reached as DigitalOcean's
would be (verify-full against the CA from /ca, on the cluster's host names, as doadmin and as the
user), keeps an address outside its trusted sources out, and leaves nothing when destroyed.

Lab `mlpg`: public network 10.241.50.0/24, VPC 10.240.50.0/24."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from standinkit import PROBE, program_stack, standin_account

from lab.standin.service import StandInLab

LAB = StandInLab(
    prefix="mlpg",
    public_network="10.241.50.0/24",
    vpc_pool=("10.240.50.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-pg-test"),
)
pytestmark = [pytest.mark.engine, pytest.mark.lab]
STACK = "pgt"
PROGRAM = Path(__file__).parent / "managed_pg_program" / "__main__.py"
OUTSIDER = "10.241.50.250"  # on the public network, in no trusted source
# Run on the app side (the lab's host names resolve): connects with verify-full and answers
# (in recovery?, user, database); the password comes on stdin.
CONNECT = """
import json, sys, psycopg
host, user, dbname, ca = sys.argv[1:5]
with psycopg.connect(host=host, port=25060, user=user, dbname=dbname, password=sys.stdin.read(),
                     sslmode="verify-full", sslrootcert=ca, connect_timeout=5) as conn:
    row = conn.execute("select pg_is_in_recovery(), current_user, current_database()").fetchone()
    print(json.dumps(list(row)))
"""


def stack_config() -> dict:
    """The program's settings: its VPC, the app tag and the operator's addresses trusted."""
    operator, vpc_operator = LAB.operator_address, "10.240.50.1"
    return {"vpcCidr": "10.240.50.0/24", "appTag": "mlpg-app",
            "appCidrs": [f"{operator}/32", f"{vpc_operator}/32"]}  # fmt: skip


def connect(host: str, user: str, dbname: str, password: str, ca: Path) -> list:
    argv = LAB.hosts.app_command(sys.executable, "-c", CONNECT, host, user, dbname, str(ca))
    result = subprocess.run(argv, input=password, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def probe(ns: str, address: str) -> str:
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, address, "25060", "2"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()


def test_a_managed_cluster_up_refreshed_reached_filtered_and_destroyed(tmp_path):
    with standin_account(LAB) as (client, _key):
        client.token = f"dop_v1_standin-{STACK}"
        stack = program_stack(LAB, client, STACK, tmp_path / "stack", PROGRAM, stack_config())
        started = time.monotonic()
        stack.up()
        up_seconds = time.monotonic() - started
        out = stack.outputs()
        stack.preview("--refresh", "--expect-no-changes")

        [cluster] = client.call("GET", "/v2/databases")["databases"]
        assert (cluster["status"], cluster["version"], cluster["num_nodes"]) == ("online", "15", 2)
        assert out["host"] == cluster["connection"]["host"]
        assert out["private_host"] == f"private-{out['host']}"
        assert out["port"] == 25060
        ca = tmp_path / "ca.pem"
        ca.write_text(out["ca_cert"])
        assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")

        # verify-full on every host name, as doadmin and as the user; the standby in recovery.
        admin = out["admin_password"]
        for host in (out["host"], out["private_host"]):
            assert connect(host, "doadmin", "defaultdb", admin, ca) == [
                False,
                "doadmin",
                "defaultdb",
            ]
            assert connect(host, "mastodon", "mastodon_production", out["user_password"], ca) == [
                False,
                "mastodon",
                "mastodon_production",
            ]
        for kind in ("replica-", "private-replica-"):
            standby = f"{kind}{out['host']}"
            assert connect(standby, "doadmin", "defaultdb", admin, ca) == [
                True,
                "doadmin",
                "defaultdb",
            ]

        # The standby streams from the primary (asked as the superuser on the primary's node).
        nodes = LAB.hosts
        record = json.loads((LAB.state_dir / "state.json").read_text())["databases"][cluster["id"]]
        primary, standby_node = record["nodes"]
        streaming = nodes.node_run(
            primary,
            "runuser -u postgres -- psql -X -At -p 25060 -c "
            "'select client_addr, state from pg_stat_replication'",
        )
        assert streaming.split() == [f"{standby_node['private']}|streaming"]

        # Trusted sources: the operator's addresses are in, an outsider is not.
        outsider = LAB.hosts.add_probe(1, "pub", OUTSIDER, 24)
        assert probe(outsider, primary["public"]) == "timeout"
        assert probe(outsider, standby_node["public"]) == "timeout"
        # No trusted source: open to all, as on DigitalOcean (the provider's delete does this).
        client.call("PUT", f"/v2/databases/{cluster['id']}/firewall", {"rules": []})
        assert probe(outsider, primary["public"]) == "open"

        stack.destroy()
        deadline = time.monotonic() + 60
        while client.call("GET", "/v2/databases")["databases"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert client.call("GET", "/v2/databases")["databases"] == []
        left = [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                text=True).stdout.split() if ns.startswith("mlpg-d")]  # fmt: skip
        assert left == []
        assert list((LAB.state_dir / "droplets").iterdir()) == []  # the nodes' files
        assert "ondigitalocean" not in LAB.hosts.hosts_file.read_text()
        print(f"managed stack up in {up_seconds:.0f} s")
