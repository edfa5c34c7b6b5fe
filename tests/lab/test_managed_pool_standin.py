"""Connection pools and the standby's takeover of the stand-in's managed PostgreSQL, through the
real engine and provider: a stack of the test's own (tests/lab/managed_pool_program: a cluster
with a standby, a database, a user, a pool in transaction mode, trusted sources, a read-only node)
goes up; the pool is reached as DigitalOcean's would be (verify-full with the CA from /ca on the
cluster's host names at 25061, from the app side); prepared statements of three interleaved
clients fail through it; its primary is powered off under a write load through the pool, and the
standby takes over: writes resume through the same host name, the rows committed before are
there, a new standby and the read-only node stream from the new primary, and a refresh shows no
change; a pool over DigitalOcean's limit is refused.

Lab `mlpt`: public network 10.241.64.0/24, VPC 10.240.64.0/24."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from ipaddress import ip_address
from pathlib import Path

import pytest
from standinkit import PROBE, program_stack, standin_account

from lab.stack import PulumiFailed
from lab.standin.service import StandInLab

LAB = StandInLab(
    prefix="mlpt",
    public_network="10.241.64.0/24",
    vpc_pool=("10.240.64.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-pools-test"),
)
pytestmark = [pytest.mark.engine, pytest.mark.lab]
STACK = "plt"
PROGRAM = Path(__file__).parent / "managed_pool_program" / "__main__.py"
POOL_SIZE = 10
OUTSIDER = "10.241.64.250"  # on the public network, in no trusted source
RESUME_BOUND = 20  # seconds from the kill until a write through the pool succeeds again
TAKEOVER_WAIT = 120  # seconds for the new standby to stream
# On the app side: each statement of argv[6:] on one connection (verify-full; the password on
# stdin); prints the rows of the last, or the error's class and message.
QUERY = """
import json, sys, psycopg
host, port, user, dbname, ca, sslmode = sys.argv[1:7]
try:
    with psycopg.connect(host=host, port=int(port), user=user, dbname=dbname,
                         password=sys.stdin.read(), sslmode=sslmode, sslrootcert=ca,
                         connect_timeout=5, autocommit=True) as conn:
        for sql in sys.argv[7:]:
            cur = conn.execute(sql)
        print(json.dumps(cur.fetchall() if cur.description else None, default=str))
except psycopg.Error as err:
    print(json.dumps({"error": type(err).__name__, "message": str(err)}))
"""
# Three clients, one after the other, each running a server-side prepared statement of its own
# twice (psycopg names each _pg3_0): through a transaction pool they share one server connection.
PREPARED = """
import json, sys, psycopg
host, port, user, dbname, ca = sys.argv[1:6]
password = sys.stdin.read()
clients = [psycopg.connect(host=host, port=int(port), user=user, dbname=dbname, password=password,
                           sslmode="verify-full", sslrootcert=ca, autocommit=True)
           for _ in range(3)]
outcomes = []
for round in range(2):
    for i, conn in enumerate(clients):
        try:
            [answer] = conn.execute(f"select %s::int + {i}", [10], prepare=True).fetchone()
            outcomes.append("ok" if answer == 10 + i else f"wrong answer {answer}")
        except psycopg.Error as err:
            outcomes.append(type(err).__name__)
print(json.dumps(outcomes))
"""
# Inserts rows 1, 2, ... through the pool, each its own transaction, reconnecting after an error
# (a dead peer is given up after 2 s); never a prepared statement (as Mastodon's
# PREPARED_STATEMENTS=false through a transaction pool); one JSON line per commit or error. Stops
# after 20 commits following its first error, or at its deadline.
WRITER = """
import json, sys, time, psycopg
host, port, user, dbname, ca, seconds = sys.argv[1:7]
password = sys.stdin.read()
deadline, n, conn, failed, after = time.monotonic() + float(seconds), 0, None, False, 0
while time.monotonic() < deadline and after < 20:
    try:
        if conn is None:
            conn = psycopg.connect(host=host, port=int(port), user=user, dbname=dbname,
                                   password=password, sslmode="verify-full", sslrootcert=ca,
                                   autocommit=True, connect_timeout=2, tcp_user_timeout=2000,
                                   prepare_threshold=None)
        conn.execute("insert into takeover (n) values (%s)", [n + 1])
        n += 1
        after += failed
        print(json.dumps({"committed": n, "at": time.time()}), flush=True)
    except psycopg.errors.UniqueViolation:  # committed, but its answer was lost with the node
        n += 1
        print(json.dumps({"committed": n, "at": time.time()}), flush=True)
    except psycopg.Error as err:
        failed = True
        print(json.dumps({"error": type(err).__name__, "message": str(err), "at": time.time()}),
              flush=True)
        if conn is not None:
            conn.close()
        conn = None
        time.sleep(0.2)
    time.sleep(0.02)
"""


def program_config(**extra) -> dict:
    cidrs = [f"{LAB.operator_address}/32", "10.240.64.1/32"]  # the app side, both networks
    return {"vpcCidr": "10.240.64.0/24", "appTag": "mlpt-app", "appCidrs": cidrs,
            "poolSize": POOL_SIZE, **extra}  # fmt: skip


def app_side(script: str, *argv: str, password: str, timeout: float = 30):
    """`script` run on the app side (the lab's names resolve); its JSON answer."""
    command = LAB.hosts.app_command(sys.executable, "-c", script, *argv)
    result = subprocess.run(command, input=password, capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def query(out: dict, ca: Path, host: str, port: int, *sql: str, admin=False, sslmode="verify-full"):
    """`sql` as the pool's user through the pool (`admin`: as doadmin, on `defaultdb` or the
    database when `port` is 25060)."""
    user, password = (
        ("doadmin", out["admin_password"]) if admin else ("mastodon", out["pool_password"])
    )
    dbname = out["pool_name"] if port == 25061 else "mastodon_production"
    return app_side(QUERY, host, str(port), user, dbname, str(ca), sslmode, *sql, password=password)


def cluster_record(client, ident: str) -> dict:
    return client.call("GET", "/_standin/state")["databases"][ident]


def check_the_pool(out: dict, ca: Path) -> None:
    """verify-full on both host names; TLS only; transaction mode breaks prepared statements."""
    who = "select current_user, current_database(), pg_is_in_recovery()"
    for host in (out["pool_host"], out["pool_private_host"]):
        assert query(out, ca, host, 25061, who) == [["mastodon", "mastodon_production", False]]
    plain = query(out, ca, out["pool_private_host"], 25061, who, sslmode="disable")
    assert plain["error"] == "OperationalError", plain
    argv = (out["pool_private_host"], "25061", "mastodon", out["pool_name"], str(ca))
    outcomes = app_side(PREPARED, *argv, password=out["pool_password"])
    # psycopg names a connection's statements _pg3_0, _pg3_1, ... (a failed one uses up its
    # name): on the one server connection they share, each name exists once.
    assert outcomes == [
        "ok",
        "DuplicatePreparedStatement",
        "DuplicatePreparedStatement",
        "ok",
        "ok",
        "DuplicatePreparedStatement",
    ]
    # The same three clients straight to PostgreSQL: each its own session.
    direct = (out["private_host"], "25060", "mastodon", "mastodon_production", str(ca))
    assert app_side(PREPARED, *direct, password=out["pool_password"]) == ["ok"] * 6


def check_trusted_sources(client, cluster_id: str) -> None:
    """An address outside the trusted sources reaches neither 25060 nor the pools' 25061."""
    outsider = LAB.hosts.add_probe(1, "pub", OUTSIDER, 24)
    for node in cluster_record(client, cluster_id)["nodes"]:
        for port in ("25060", "25061"):
            argv = ["ip", "netns", "exec", outsider, sys.executable, "-c", PROBE, node["public"],
                    port, "2"]  # fmt: skip
            seen = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
            assert seen.strip() == "timeout", (node["id"], port, seen)


def write_through_a_takeover(client, out: dict, ca: Path, ident: str, log: Path) -> dict:
    """The primary powered off under writes through the pool; what the writer saw."""
    made = query(out, ca, out["private_host"], 25060,
                 "create table takeover (n int primary key, at timestamptz default now())",
                 "grant select, insert on takeover to mastodon", admin=True)  # fmt: skip
    assert made is None, made
    primary = cluster_record(client, ident)["nodes"][0]
    argv = (out["pool_private_host"], "25061", "mastodon", out["pool_name"], str(ca), "90")
    with open(log, "w") as errors:
        writer = subprocess.Popen(LAB.hosts.app_command(sys.executable, "-c", WRITER, *argv),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=errors, text=True)  # fmt: skip
    writer.stdin.write(out["pool_password"])
    writer.stdin.close()
    lines = []
    while len(lines) < 50:  # writes flow before the kill
        line = writer.stdout.readline()
        assert line, f"the writer ended ({writer.wait(5)}): {lines} {log.read_text()}"
        lines.append(json.loads(line))
    LAB.hosts.power_off(primary)  # a pulled plug: every process of the node killed, links down
    killed = time.time()
    lines += [json.loads(line) for line in writer.stdout]
    assert writer.wait(timeout=120) == 0, log.read_text()
    return {"lines": lines, "killed": killed, "dead": primary["id"]}


def new_standby(client, ident: str, dead: str) -> list[dict]:
    """The cluster's nodes once the dead one is replaced and every node is up."""
    deadline = time.monotonic() + TAKEOVER_WAIT
    while time.monotonic() < deadline:
        nodes = cluster_record(client, ident)["nodes"]
        if dead not in [n["id"] for n in nodes] and all(n.get("host_ready") for n in nodes):
            return nodes
        time.sleep(1)
    raise AssertionError(f"no new standby within {TAKEOVER_WAIT} s: {nodes}")


def check_the_takeover(client, out: dict, ca: Path, cluster: dict, log: Path) -> str:
    """Writes through the pool resume within the bound after the primary dies; what was
    committed before is there (but an acknowledged tail, with asynchronous replication); the new
    standby streams from the new primary under the same names. Returns what it measured."""
    seen = write_through_a_takeover(client, out, ca, cluster["id"], log)
    committed = [e for e in seen["lines"] if "committed" in e]
    first_error = next(e for e in seen["lines"] if "error" in e)
    before = [e["committed"] for e in committed if e["at"] < first_error["at"]]
    resumed = next(e for e in committed if e["at"] > first_error["at"])
    resume_seconds = resumed["at"] - seen["killed"]
    assert resume_seconds < RESUME_BOUND
    rows = query(out, ca, out["pool_private_host"], 25061, "select n from takeover order by n")
    present = [row[0] for row in rows]
    lost = [n for n in before if n not in present]
    assert lost == before[len(before) - len(lost) :]  # only a tail: WAL streams in order
    assert present == [n for n in range(1, committed[-1]["committed"] + 1) if n not in lost]
    new_primary, standby = new_standby(client, cluster["id"], seen["dead"])
    assert standby["id"] == f"pg-{cluster['id'][:8]}-2"
    # The new standby and the read-only node stream from the new primary; the node has the rows
    # written after the takeover.
    [read_only] = client.call("GET", "/_standin/state")["database_replicas"].values()
    streaming = LAB.hosts.node_run(
        new_primary,
        "runuser -u postgres -- psql -X -At -p 25060 -c "
        "'select client_addr, state from pg_stat_replication order by 1'",
    )
    followers = sorted([standby["private"], read_only["node"]["private"]], key=ip_address)
    assert streaming.split() == [f"{address}|streaming" for address in followers]
    last, deadline = [[committed[-1]["committed"]]], time.monotonic() + 15
    on_node = "select max(n) from takeover"
    while query(out, ca, out["replica_private_host"], 25060, on_node, admin=True) != last:
        assert time.monotonic() < deadline, "the read-only node lacks the rows after the takeover"
        time.sleep(0.5)
    recovery = "select pg_is_in_recovery()"
    assert query(out, ca, f"replica-{out['host']}", 25060, recovery, admin=True) == [[True]]
    assert query(out, ca, out["host"], 25060, recovery, admin=True) == [[False]]
    assert client.call("GET", f"/v2/databases/{cluster['id']}")["database"] == cluster
    return (
        f"writes resumed {resume_seconds:.1f} s after the kill; {len(before)} rows committed "
        f"before it, {len(before) - len(lost)} of them there"
    )


def test_a_pool_reached_a_takeover_under_writes_and_a_pool_over_the_limit(tmp_path):
    with standin_account(LAB) as (client, _key):
        client.token = f"dop_v1_standin-{STACK}"
        stack = program_stack(LAB, client, STACK, tmp_path / "stack", PROGRAM, program_config())
        stack.up()
        out = stack.outputs()
        stack.preview("--refresh", "--expect-no-changes")
        [cluster] = client.call("GET", "/v2/databases")["databases"]
        assert (out["pool_host"], out["pool_private_host"]) == (
            cluster["connection"]["host"],
            cluster["private_connection"]["host"],
        )
        assert (out["pool_port"], out["pool_name"], out["pool_user"]) == (
            25061,
            "mastodon_pool",
            "mastodon",
        )
        ca = tmp_path / "ca.pem"
        ca.write_text(out["ca_cert"])
        check_the_pool(out, ca)
        check_trusted_sources(client, cluster["id"])
        measured = check_the_takeover(client, out, ca, cluster, tmp_path / "writer.log")
        stack.preview("--refresh", "--expect-no-changes")

        # A second pool over DigitalOcean's limit (47 on 2 GiB, 10 taken): the provider fails.
        stack.configure(program_config(extraPoolSize=38), {})
        with pytest.raises(PulumiFailed) as refused:
            stack.up()
        assert (
            "pool size 38 exceeds the 37 connections available on db-s-1vcpu-2gb "
            "(25 per GiB, 3 reserved, 10 used by other pools)"
        ) in str(refused.value)
        stack.configure(program_config(), {})
        stack.destroy()
        print(f"takeover: {measured}")
