"""The read endpoint of droplets mode on the DigitalOcean stand-in, through the real engine and
provider: a stack with three replicas (replicaLoadBalancer auto) gets an INTERNAL load balancer
over its droplets' tag, served by HAProxy at the load balancer's VPC address, and Mastodon's
REPLICA_DB_* name it. Proven here, with new connections as the env says (psycopg, TLS
`require`, no prepared statements), each asked `inet_server_addr()` (PgBouncer logs in to its
replica's private address):
- a refreshed preview after up has no changes;
- 300 new connections land on each replica within 20 % of a third, none on the primary;
- a replica whose PostgreSQL is killed gets no new connection after the health bound (measured)
  and reads through the endpoint then fail 0 times; it comes back once restarted;
- a replica whose replay is paused falls more than replicaMaxLagBytes behind under a write load
  and drops out; after `pg_wal_replay_resume()` it comes back;
- replicaCount 3 -> 2: the endpoint spreads over the two left, with no manual step;
- a replica's droplet replaced (`pulumi up --replace`): the new droplet joins the endpoint by
  its tag, the old one leaves it, with no manual step.

Lab `mlrd`: public network 10.241.80.0/24, VPC 10.240.80.0/24."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from labkit import write_figures
from standinkit import Droplets, standin_account, wait_until

from lab.read_endpoint_probe import probes_over, spread
from lab.standin.service import StandInLab

pytestmark = [pytest.mark.engine, pytest.mark.lab]
LAB = StandInLab(
    prefix="mlrd",
    public_network="10.241.80.0/24",
    vpc_pool=("10.240.80.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-read-endpoint-test"),
)
CONNECTIONS = 300
TOLERANCE = 0.20  # each replica's share within 20 % of an even one
# The program's health check: every 3 s, 3 s to answer, out after 2 failures: a dead replica
# gets no new connection 2 x 3 + 3 = 9 s after its death at the latest (plus one check's skew).
HEALTH_BOUND = 12.0
ROWS = "SELECT repeat('x', 500) FROM generate_series(1, 20000)"  # about 12 MB of WAL
WAIT = 60  # seconds for a replica to leave or join the endpoint
FIGURES: dict = {}


def even(seen: Counter, addresses: list[str]) -> bool:
    share = sum(seen.values()) / len(addresses)
    return set(seen) == set(addresses) and all(
        abs(seen[a] - share) <= TOLERANCE * share for a in addresses
    )


def in_rotation(env: dict, addresses: set[str], samples: int = 12) -> set[str]:
    return set(spread(env, samples)[0]) & addresses


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with standin_account(LAB) as (client, key_id):
        workdir = tmp_path_factory.mktemp("read-endpoint")
        s = Droplets(LAB, client.url, key_id, workdir, name="rd", vpc="10.240.80.0/24",
                     replicas=3, protectData=False)  # fmt: skip
        first = s.apply()
        outputs = first["outputs"]
        replicas = {r["name"]: r for r in outputs["replicas"]}
        yield {"s": s, "outputs": outputs, "env": outputs["mastodon_env"], "replicas": replicas,
               "up_seconds": first["seconds"]}  # fmt: skip
        write_figures("read_endpoint_standin", FIGURES)


def test_the_env_reads_through_an_internal_load_balancer_over_the_tag(stack):
    s, env = stack["s"], stack["env"]
    (lb,) = s.client.call("GET", "/v2/load_balancers")["load_balancers"]
    droplets = {d["id"] for d in s.client.droplets() if "-rd-" in d["name"]}
    assert (lb["status"], lb["network"], lb["tag"]) == ("active", "INTERNAL", "mastodon-data-rd-db")
    assert set(lb["droplet_ids"]) == droplets and len(droplets) == 4
    assert lb["ip"].startswith("10.240.80.")
    assert (env["REPLICA_DB_HOST"], env["REPLICA_DB_PORT"]) == (lb["ip"], "6432")
    assert stack["outputs"]["read_endpoint"]["private_host"] == lb["ip"]


def test_a_refreshed_preview_after_up_has_no_changes(stack):
    s = stack["s"]
    out = s.stack.preview("--refresh", "--expect-no-changes", check=False)
    assert s.stack.last.returncode == 0, out + s.stack.last.stderr


def test_new_connections_spread_evenly_over_the_replicas_and_never_the_primary(stack):
    env, replicas = stack["env"], [r["private_address"] for r in stack["replicas"].values()]
    waited = wait_until(lambda: in_rotation(env, set(replicas), 24) == set(replicas), WAIT,
                        "every replica in rotation")  # fmt: skip
    seen, failures = spread(env, CONNECTIONS)
    FIGURES["spread"] = {"per_replica": dict(seen), "failures": failures, "waited": waited}
    assert failures == 0
    assert even(seen, replicas), seen
    assert stack["outputs"]["primary"]["private_address"] not in seen


def test_a_killed_replica_leaves_within_the_health_bound_and_reads_then_never_fail(stack):
    s, env = stack["s"], stack["env"]
    victim = stack["replicas"]["db-1"]
    others = {r["private_address"] for r in stack["replicas"].values()} - {
        victim["private_address"]
    }
    s.ssh(victim["public_address"], "pkill -KILL --ns $$ --nslist net -x postgres")
    sent = probes_over(env, HEALTH_BOUND + 5)
    # when the last new connection was sent that did not land on another replica
    last_on_victim = max((at for at, where in sent if where not in others), default=0.0)
    bound = round(last_on_victim, 1)
    seen, failures = spread(env, 100)
    FIGURES["dead_replica"] = {"left_after_seconds": bound, "after": dict(seen),
                               "failures_after": failures}  # fmt: skip
    assert bound <= HEALTH_BOUND
    assert failures == 0 and set(seen) == others, seen
    s.ssh(victim["public_address"], "pg_ctlcluster 15 main start")
    back = wait_until(lambda: in_rotation(env, {victim["private_address"]}) != set(), WAIT,
                      "the restarted replica back")  # fmt: skip
    FIGURES["dead_replica"]["back_after_restart_seconds"] = back


def test_a_replica_whose_replay_is_paused_drops_out_and_comes_back(stack):
    s, env = stack["s"], stack["env"]
    paused = stack["replicas"]["db-2"]
    primary = stack["outputs"]["primary"]["public_address"]
    s.psql(paused["public_address"], "SELECT pg_wal_replay_pause()")
    try:
        # More than replicaMaxLagBytes (16 MiB) of WAL while db-2 receives but does not replay.
        s.psql(primary, "CREATE TABLE IF NOT EXISTS lb_load (v text)")
        for _ in range(4):
            s.psql(primary, f"INSERT INTO lb_load {ROWS}")
        url = f"http://{paused['private_address']}:8008/replica"
        health = s.ssh(paused["public_address"], f"curl -s {url} || true")
        left = wait_until(lambda: in_rotation(env, {paused["private_address"]}, 24) == set(),
                          WAIT, "the paused replica out")  # fmt: skip
        seen, failures = spread(env, 60)
        assert failures == 0 and paused["private_address"] not in seen, seen
    finally:
        s.psql(paused["public_address"], "SELECT pg_wal_replay_resume()")
    back = wait_until(lambda: in_rotation(env, {paused["private_address"]}) != set(), WAIT,
                      "the resumed replica back")  # fmt: skip
    FIGURES["paused_replica"] = {"left_seconds": left, "back_seconds": back, "health": health}
    assert '"healthy": false' in health and "bytes behind" in health


def test_three_to_two_replicas_keeps_the_endpoint_even_with_no_manual_step(stack):
    s = stack["s"]
    two = s.apply(replicaCount=2)
    env = two["outputs"]["mastodon_env"]
    left = [r["private_address"] for r in two["outputs"]["replicas"]]
    gone = stack["replicas"]["db-3"]["private_address"]
    assert env["REPLICA_DB_HOST"] == stack["env"]["REPLICA_DB_HOST"]
    (lb,) = s.client.call("GET", "/v2/load_balancers")["load_balancers"]
    assert len(lb["droplet_ids"]) == 3
    wait_until(lambda: in_rotation(env, set(left), 24) == set(left), WAIT, "both replicas in")
    seen, failures = spread(env, CONNECTIONS)
    FIGURES["two_replicas"] = {"per_replica": dict(seen), "failures": failures}
    assert failures == 0 and gone not in seen
    assert even(seen, left), seen
    out = s.stack.preview("--refresh", "--expect-no-changes", check=False)
    assert s.stack.last.returncode == 0, out + s.stack.last.stderr


def test_a_replaced_replica_joins_the_endpoint_with_no_manual_step(stack):
    s = stack["s"]
    old = s.droplet(1)
    urn = next(
        r["urn"]
        for r in json.loads(s.stack.pulumi("stack", "export"))["deployment"]["resources"]
        if r["type"] == "digitalocean:index/droplet:Droplet" and r["urn"].endswith("::db-pg15-1")
    )
    s.stack.up("--replace", urn)
    outputs = s.stack.outputs()
    new = s.droplet(1)
    (lb,) = s.client.call("GET", "/v2/load_balancers")["load_balancers"]
    assert new["id"] != old["id"]
    assert new["id"] in lb["droplet_ids"] and old["id"] not in lb["droplet_ids"]
    env = outputs["mastodon_env"]
    replicas = [r["private_address"] for r in outputs["replicas"]]
    waited = wait_until(lambda: in_rotation(env, set(replicas), 24) == set(replicas), WAIT,
                        "the replaced replica in rotation")  # fmt: skip
    seen, failures = spread(env, 100)
    FIGURES["replaced_replica"] = {"in_rotation_after_up_s": waited, "per_replica": dict(seen)}
    assert failures == 0 and even(seen, replicas), seen
