"""A blue/green major upgrade in droplets mode (issue 24, item 2) on a DigitalOcean stand-in of
its own (mlud), through the real engine and provider: one stack, first PostgreSQL 15 on two
Debian 12 droplets (db-0 primary, db-1 replica, pools, the read endpoint's load balancer,
protectData on); then postgresVersion 17 and image debian-13-x64 with `upgradeFrom`, which makes
a second tier of droplets named after 17. Under writing clients through the env Mastodon had
(lab/write_load.py) and one inserting with a sequence: the upgrade run, a run that changes
nothing, the rollback in one command (`mastodon-data upgrade old`), the way back, and the
retirement (`mastodon-data upgrade retire`), which deletes the old droplets and leaves a stack
that previews with no change. Figures: results/upgrade_standin.json."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from labkit import write_figures
from standinkit import Droplets, public, standin_account, wait_until

from lab.bluegreen import StatusWriter
from lab.read_endpoint_probe import landed_on
from lab.standin.service import StandInLab
from lab.write_load import TABLE, WriteLoad, connect
from tests.fixtures import COMMAND

pytestmark = [pytest.mark.engine, pytest.mark.lab]
LAB = StandInLab(
    prefix="mlud",
    public_network="10.241.170.0/24",
    vpc_pool=("10.240.170.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-upgrade-do"),
)
STACK = "blue"
PAUSE_BOUND = 15.0  # seconds: 3 times the goal (see test_upgrade_engine.py)
FIGURES: dict[str, object] = {}
SCHEMA = (
    f"CREATE TABLE {TABLE} (client int, n int, PRIMARY KEY (client, n))",
    "CREATE TABLE statuses (id bigserial PRIMARY KEY, body text NOT NULL)",
    "INSERT INTO statuses (body) SELECT 'seeded' FROM generate_series(1, 3000)",
)
ROWS_MD5 = "coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '')"
UPGRADING = {"postgresVersion": 17, "image": "debian-13-x64"}


def served_by(env: dict) -> tuple:
    with connect(env) as conn:
        return conn.execute(
            "SELECT host(inet_server_addr()), current_setting('server_version_num')::int / 10000"
        ).fetchone()


def reads_on(env: dict, address: str) -> bool:
    """New connections through the read endpoint (REPLICA_DB_*) land on `address`; a wrong
    password is an error at once, an endpoint not yet serving is only not yet."""
    try:
        return {landed_on(env) for _ in range(4)} == {address}
    except psycopg.OperationalError as error:
        if "password authentication failed" in str(error):
            raise
        return False


def droplets_of(s: Droplets) -> dict[str, str]:
    """The stack's droplets in the account: name -> image."""
    return {d["name"]: d["image"]["slug"] for d in s.client.droplets() if f"-{STACK}-" in d["name"]}


def account(s: Droplets, kind: str) -> set[str]:
    """Names of the stand-in account's `kind` (volumes, firewalls, load_balancers, tags)."""
    return {v["name"] for v in s.client.state()[kind].values() if STACK in v["name"]}


def checksums(s: Droplets, address: str) -> dict[str, str]:
    return {
        table: s.psql(address, f"SELECT count(*) || ' ' || {ROWS_MD5} FROM {table} t")
        for table in ("statuses", TABLE)
    }


def operator_command(s: Droplets, *args: str) -> subprocess.CompletedProcess:
    argv = [COMMAND, args[0], "--stack", STACK, "--cwd", str(s.stack.workdir), *args[1:]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=1800, env=s.stack.env())


def under_load(s: Droplets, env: dict, change) -> tuple[WriteLoad, StatusWriter, object]:
    """`change()` while clients write through `env`: the loads, stopped, and its result."""
    primary = public(s.stack.outputs(), s.stack.outputs()["primary"]["name"])
    s.psql(primary, f"TRUNCATE {TABLE}")
    with WriteLoad(env) as load, StatusWriter(env) as statuses:
        time.sleep(1)
        result = change()
        time.sleep(1)
    return load, statuses, result


def assert_nothing_lost(s: Droplets, load, statuses, primary: str) -> None:
    """Every committed row on `primary` (a public address), the sequence past the rows."""
    assert load.errors == [] and statuses.errors == []
    assert all(load.committed.values()) and statuses.ids
    rows = s.psql(primary, f"SELECT client || ',' || n FROM {TABLE}").splitlines()
    assert {tuple(map(int, row.split(","))) for row in rows} == load.rows  # 0 lost
    last = int(s.psql(primary, "SELECT last_value FROM statuses_id_seq"))
    assert last >= max(statuses.ids) == int(s.psql(primary, "SELECT max(id) FROM statuses"))
    assert load.longest_pause_s <= PAUSE_BOUND


def state_names(s: Droplets) -> set[str]:
    state = json.loads(s.stack.pulumi("stack", "export"))
    return {r["urn"].rpartition("::")[2] for r in state["deployment"].get("resources", [])}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with standin_account(LAB) as (client, key_id):
        workdir = tmp_path_factory.mktemp("upgrade-standin")
        s = Droplets(LAB, client.url, key_id, workdir, STACK, "10.240.170.0/24", 1,
                     pgbouncer=True, replicaLoadBalancer=True)  # fmt: skip
        first = s.apply()
        env = first["outputs"]["mastodon_env"]
        with connect(env) as conn:
            for statement in SCHEMA:
                conn.execute(statement)
        try:
            yield {"s": s, "env": env, "first": first["outputs"]}
        finally:
            write_figures("upgrade_standin", FIGURES)


def test_pulumi_up_makes_a_17_tier_and_moves_the_writes_to_it(lab):
    s, env, before = lab["s"], lab["env"], lab["first"]
    s.config.update(UPGRADING, upgradeFrom={"postgresVersion": 15})
    s.stack.configure(s.config, s.secrets)
    started = time.monotonic()
    load, statuses, _ = under_load(s, env, s.stack.up)
    FIGURES["upgrade_up_s"] = round(time.monotonic() - started, 1)
    FIGURES["upgrade_longest_write_pause_s"] = load.longest_pause_s
    outputs = s.stack.outputs()
    assert outputs["upgrade"]["serving"] == "new"
    assert droplets_of(s) == {
        f"mastodon-db-{STACK}-0": "debian-12-x64", f"mastodon-db-{STACK}-1": "debian-12-x64",
        f"mastodon-db-{STACK}-pg17-0": "debian-13-x64",
        f"mastodon-db-{STACK}-pg17-1": "debian-13-x64",
    }  # fmt: skip
    new_primary = outputs["primary"]
    assert new_primary["private_address"] != before["primary"]["private_address"]
    new_env = outputs["mastodon_env"]
    assert new_env["DB_HOST"] == new_primary["private_address"]
    assert served_by(new_env) == (new_primary["private_address"], 17)
    assert served_by(env) == (new_primary["private_address"], 17)  # the old env's pool too
    assert_nothing_lost(s, load, statuses, new_primary["public_address"])
    # The read endpoint: the 17 tier's load balancer over the 17 replica.
    assert new_env["REPLICA_DB_HOST"] == outputs["read_endpoint"]["private_host"]
    assert new_env["REPLICA_DB_HOST"] != env["REPLICA_DB_HOST"]
    replica = outputs["replicas"][0]
    wait_until(lambda: reads_on(new_env, replica["private_address"]), 60,
               "reads on the 17 replica")  # fmt: skip
    old_primary = before["primary"]["public_address"]
    wait_until(lambda: checksums(s, old_primary) == checksums(s, new_primary["public_address"]),
               60, "the old primary following the new one")  # fmt: skip
    assert account(s, "tags") == {f"mastodon-data-{STACK}-db", f"mastodon-data-{STACK}-db-pg17"}


def test_a_second_run_changes_nothing(lab):
    lab["s"].stack.preview("--refresh", "--expect-no-changes")


def test_a_rollback_is_one_command_and_loses_nothing(lab):
    s, env, before = lab["s"], lab["env"], lab["first"]
    load, statuses, result = under_load(s, env, lambda: operator_command(s, "upgrade", "old"))
    assert result.returncode == 0, result.stderr[-3000:]
    FIGURES["rollback_longest_write_pause_s"] = load.longest_pause_s
    outputs = json.loads(result.stdout)
    assert outputs["upgrade"]["serving"] == "old"
    assert outputs["mastodon_env"]["DB_HOST"] == before["primary"]["private_address"]
    assert outputs["read_endpoint"] == before["read_endpoint"]  # the 15 tier's again
    assert served_by(env) == (before["primary"]["private_address"], 15)
    assert_nothing_lost(s, load, statuses, before["primary"]["public_address"])


def test_forward_again_then_retirement_leaves_only_the_17_droplets(lab):
    s = lab["s"]
    result = operator_command(s, "upgrade", "new")
    assert result.returncode == 0, result.stderr[-3000:]
    new_env = json.loads(result.stdout)["mastodon_env"]
    load, statuses, result = under_load(
        s, new_env, lambda: operator_command(s, "upgrade", "retire")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    FIGURES["retirement_longest_write_pause_s"] = load.longest_pause_s
    outputs = s.stack.outputs()
    assert_nothing_lost(s, load, statuses, outputs["primary"]["public_address"])
    assert "upgradeFrom" not in s.stack.config() and "upgrade" not in outputs
    assert served_by(new_env) == (outputs["primary"]["private_address"], 17)
    assert droplets_of(s) == {
        f"mastodon-db-{STACK}-0": "debian-13-x64",
        f"mastodon-db-{STACK}-1": "debian-13-x64",
    }  # fmt: skip  (renamed in place: a droplet's name is not create-only)
    # The volumes and the tag keep the names they were made with; the old ones are gone.
    assert account(s, "volumes") == {f"mastodon-db-{STACK}-pg17-{n}-data" for n in (0, 1)}
    assert account(s, "tags") == {f"mastodon-data-{STACK}-db-pg17"}
    assert len(account(s, "firewalls")) == 1 and len(account(s, "load_balancers")) == 1
    names = state_names(s)
    assert not {n for n in names if "pg15" in n or n.startswith("postgres-upgrade")}
    assert {"db-pg17-0", "replication-pg17-primary"} <= names
    primary = outputs["primary"]["public_address"]
    logical = "SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical'"
    assert s.psql(primary, logical) == "0"
    assert s.psql(primary, "SELECT count(*) FROM pg_publication") == "0"
    s.stack.preview("--refresh", "--expect-no-changes")
