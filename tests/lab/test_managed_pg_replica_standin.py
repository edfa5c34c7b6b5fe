"""A read-only node (`DatabaseReplica`) of managed PostgreSQL on the DigitalOcean stand-in,
through the real engine and provider: a stack of the test's own
(tests/lab/managed_pg_replica_program: a cluster with a standby, a read-only node, trusted
sources for each) goes up and refreshes with no change; a row written on the primary is read on
the read-only node's private host name with verify-full (in recovery, writes refused); its
trusted sources are its own; it streams again after a restart of the stand-in; it follows the
cluster's new primary when the standby is promoted by hand (re-pointed), and is cloned again when
it cannot follow; destroy leaves no host, process or packet filter.

Lab `mlro`: public network 10.241.57.0/24, VPC 10.240.57.0/24."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labkit import process_marks
from standinkit import PROBE, program_stack, standin_account, wait_until

from lab.stack import LabStack
from lab.standin.account import Account
from lab.standin.service import StandInLab
from lab.standin.stack import provider_env

LAB = StandInLab(
    prefix="mlro",
    public_network="10.241.57.0/24",
    vpc_pool=("10.240.57.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-pg-replica-test"),
)
pytestmark = [pytest.mark.engine, pytest.mark.lab]
STACK = "rot"
PROGRAM = Path(__file__).parent / "managed_pg_replica_program" / "__main__.py"
INSIDER = "10.241.57.250"  # on the public network: in the cluster's trusted sources only
REPLICA = f"mlro-{STACK}-pg-replica"
# A standby promoted; a stopped primary started (the old primary back as one).
PROMOTE = (
    "if test -f /var/lib/postgresql/15/main/standby.signal; then pg_ctlcluster 15 main promote; "
    "else pg_ctlcluster 15 main start; fi"
)
PSQL = "runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -p 25060 -d defaultdb -c"
# Run on the app side (the lab's host names resolve): one statement as doadmin with verify-full;
# prints its rows, or the server's error. The password comes on stdin.
RUN_SQL = """
import json, sys, psycopg
host, ca, sql = sys.argv[1:4]
try:
    with psycopg.connect(host=host, port=25060, user="doadmin", dbname="defaultdb",
                         password=sys.stdin.read(), sslmode="verify-full", sslrootcert=ca,
                         connect_timeout=5, autocommit=True) as conn:
        cursor = conn.execute(sql)
        print(json.dumps(cursor.fetchall() if cursor.description else None))
except psycopg.Error as err:
    print(json.dumps({"error": str(err).strip()}))
"""


def replica_stack(workdir: Path, client) -> LabStack:
    """The test's program in `workdir`, its stack made, its provider on the stand-in."""
    operator = [f"{LAB.operator_address}/32", "10.240.57.1/32"]
    config = {"vpcCidr": "10.240.57.0/24", "appTag": "mlro-app",
              "clusterCidrs": [*operator, f"{INSIDER}/32"], "replicaCidrs": operator}  # fmt: skip
    return program_stack(LAB, client, STACK, workdir, PROGRAM, config, timeout=300)


class Sql:
    """Statements as doadmin from the app side, with verify-full against the CA."""

    def __init__(self, ca: Path, password: str):
        self.ca, self.password = ca, password

    def __call__(self, host: str, sql: str):
        argv = LAB.hosts.app_command(sys.executable, "-c", RUN_SQL, host, str(self.ca), sql)
        result = subprocess.run(
            argv, input=self.password, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def state() -> dict:
    return json.loads((LAB.state_dir / "state.json").read_text())


def probe(ns: str, address: str) -> str:
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, address, "25060", "2"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()


def restarted(stack: LabStack):
    """The stand-in stopped and started again (it recovers from its state); its new client."""
    LAB.stop()
    client = LAB.start()
    client.token = f"dop_v1_standin-{STACK}"
    stack.extra_env.update(provider_env(LAB, client))
    return client


def check_read_only_node(out: dict, sql: Sql) -> None:
    """A row written on the primary is read on the node; it is in recovery; writes fail."""
    assert out["replica_host"] == f"{REPLICA}-do-user-1-0.db.ondigitalocean.com"
    assert out["replica_private_host"] == f"private-{out['replica_host']}"
    assert (out["replica_port"], out["replica_user"]) == (25060, "doadmin")
    assert out["replica_password"] == out["admin_password"]
    assert sql(out["private_host"], "CREATE TABLE seen (n int)") is None
    assert sql(out["private_host"], "INSERT INTO seen VALUES (1)") is None
    replica = out["replica_private_host"]
    wait_until(lambda: sql(replica, "SELECT n FROM seen") == [[1]], 15, "the row on the node")
    assert sql(replica, "SELECT pg_is_in_recovery()") == [[True]]
    refused = sql(replica, "INSERT INTO seen VALUES (2)")
    assert refused == {"error": "cannot execute INSERT in a read-only transaction"}
    assert sql(out["replica_host"], "SELECT count(*) FROM seen") == [[1]]


def check_trusted_sources(cluster: dict, node: dict) -> None:
    """The node admits only its own sources: the insider reaches the primary, not the node."""
    insider = LAB.hosts.add_probe(1, "pub", INSIDER, 24)
    primary = state()["databases"][cluster["id"]]["nodes"][0]
    assert probe(insider, primary["public"]) == "open"
    assert probe(insider, node["public"]) == "timeout"


def streams_from(node: dict, primary: dict) -> bool:
    """Whether the cluster node `primary` sends WAL to the read-only node."""
    rows = LAB.hosts.node_run(
        primary, f"{PSQL} 'select client_addr, state from pg_stat_replication'"
    )
    return f"{node['private']}|streaming" in rows.split()


def take_over_by_hand(cluster_id: str, promote: str, stop: str) -> str:
    """With the stand-in stopped: node `stop` stopped (its last WAL sent to what streams from
    it), node `promote` promoted, made node 0 as a takeover does, and `primary_moved` run; what
    the read-only node did."""
    account = Account(LAB.hosts, public_network=LAB.public_network, vpc_pool=LAB.vpc_pool,
                      state_file=LAB.state_dir / "state.json", log=lambda text: None)  # fmt: skip
    cluster = account.databases.items[cluster_id]
    nodes = {n["id"]: n for n in cluster["nodes"]}
    LAB.hosts.node_run(nodes[stop], "pg_ctlcluster 15 main stop -m fast")
    LAB.hosts.node_run(nodes[promote], PROMOTE)
    cluster["nodes"] = [nodes[promote], nodes[stop]]
    account.save()
    said = []
    account.log = said.append
    account.database_replicas.primary_moved(cluster)
    [line] = said
    return line.rpartition(": ")[2]


def test_a_read_only_node_read_filtered_following_its_primary_and_destroyed(tmp_path):
    with standin_account(LAB) as (client, _key):
        client.token = f"dop_v1_standin-{STACK}"
        stack = replica_stack(tmp_path / "stack", client)
        stack.up()
        out = stack.outputs()
        stack.preview("--refresh", "--expect-no-changes")

        [cluster] = client.call("GET", "/v2/databases")["databases"]
        [replica] = client.call("GET", f"/v2/databases/{cluster['id']}/replicas")["replicas"]
        assert (replica["status"], replica["id"], replica["name"]) == (
            "online",
            out["replica_uuid"],
            REPLICA,
        )
        ca = tmp_path / "ca.pem"
        ca.write_text(out["ca_cert"])
        sql = Sql(ca, out["admin_password"])
        check_read_only_node(out, sql)
        node = state()["database_replicas"][replica["id"]]["node"]
        check_trusted_sources(cluster, node)
        rules = client.call("GET", f"/v2/databases/{replica['id']}/firewall")["rules"]
        assert [(r["type"], r["value"]) for r in rules] == [
            ("tag", "mlro-app"),
            ("ip_addr", f"{LAB.operator_address}/32"),
            ("ip_addr", "10.240.57.1/32"),
        ]

        # A restart of the stand-in: the node is still there and streams.
        client = restarted(stack)
        first, second = state()["databases"][cluster["id"]]["nodes"]
        wait_until(lambda: streams_from(node, first), 30, "streaming after the restart")

        # The standby promoted by hand: the node re-pointed, and a row written there is read.
        LAB.stop()
        assert take_over_by_hand(cluster["id"], second["id"], first["id"]) == "followed"
        LAB.hosts.node_run(second, f"{PSQL} 'INSERT INTO seen VALUES (3)'")
        replica_host = out["replica_private_host"]
        wait_until(lambda: sql(replica_host, "SELECT n FROM seen ORDER BY n") == [[1], [3]], 15,
                   "the new primary's row on the node")  # fmt: skip
        assert streams_from(node, second)
        # The old primary back as the primary: the node's timeline (2) cannot follow it (1).
        assert take_over_by_hand(cluster["id"], first["id"], second["id"]) == "cloned again"
        LAB.hosts.node_run(first, f"{PSQL} 'INSERT INTO seen VALUES (4)'")
        wait_until(lambda: sql(replica_host, "SELECT n FROM seen ORDER BY n") == [[1], [4]], 15,
                   "the old primary's rows on the node")  # fmt: skip

        client = restarted(stack)
        stack.preview("--refresh", "--expect-no-changes")
        check_destroyed(stack, client, node)


def check_destroyed(stack: LabStack, client, node: dict) -> None:
    """Destroy leaves no host, process, packet filter or name of the node."""
    marks = process_marks(LAB.hosts.pids(node))
    assert marks  # its sshd and PostgreSQL
    stack.destroy()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        client.call("GET", "/v2/databases")["databases"] or state()["database_replicas"]
    ):
        time.sleep(0.5)
    assert client.call("GET", "/v2/databases")["databases"] == []
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert [ns for ns in left.split() if ns.startswith("mlro-d")] == []  # filters went with them
    assert process_marks([pid for pid, _ in marks]) & marks == set()
    assert list((LAB.state_dir / "droplets").iterdir()) == []
    assert "ondigitalocean" not in LAB.hosts.hosts_file.read_text()
    assert state()["database_replicas"] == {}
    # Every request was one the stand-in implements, the provider's replica calls among them.
    entries = [json.loads(line) for line in LAB.request_log.read_text().splitlines()]
    assert [e["path"] for e in entries if not e.get("implemented")] == []
    routes = {e["route"] for e in entries}
    for route in ("POST", "GET", "DELETE"):
        wanted = "/v2/databases/{id}/replicas" + ("" if route == "POST" else "/{name}")
        assert f"{route} {wanted}" in routes
