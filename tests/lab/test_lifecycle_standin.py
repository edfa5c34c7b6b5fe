"""Lifecycle of a droplets stack on a DigitalOcean stand-in of its own (mlld), through the real
engine and provider; one stack (db-0 primary, db-1 and db-2 replicas) in one flow:
- an admin key added to sshKeyIds, the image changed and the sizes changed: the preview replaces
  nothing, `up` resizes in place (same droplets, same database); authorizedKeys puts the new
  admin's key on every droplet (it logs in with it);
- `mastodon-data failover promote db-1` after the primary's PostgreSQL is killed: primaryNode is
  1, no droplet, VPC or firewall is made anew, every replica streams from db-1, mastodon_env
  points at it, and a refreshed preview is quiet;
- `mastodon-data switchover db-2` under 8 clients writing through the env they started with:
  no client error, every committed row on db-2, primaryNode 2, the others stream from db-2
  without a rewind, a refreshed preview is quiet;
- after each, the read endpoint (the load balancer of two replicas) sends new connections to
  exactly the replicas of the moment, with no manual step;
- the droplets are protected: `destroy` refuses; protectData false for one run, then it goes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from enginekit import pack_venv
from labkit import lab_unavailable, write_figures
from standinkit import Droplets, check_replication, public, wait_until

from lab.read_endpoint_probe import spread
from lab.stack import engine_gap
from lab.standin.service import StandInLab
from lab.write_load import TABLE, WriteLoad
from tests.fixtures import COMMAND

pytestmark = [pytest.mark.engine, pytest.mark.lab]
LAB = StandInLab(
    prefix="mlld",
    public_network="10.241.30.0/24",
    vpc_pool=("10.240.30.0/24", "10.240.31.0/24"),
    state_dir=Path("/var/lib/mastodon-lab-life-do"),
)
VPC = "10.240.30.0/24"
SYSID = "SELECT system_identifier FROM pg_control_system()"
FIGURES: dict[str, object] = {}
READ_ENDPOINT_WAIT = 60  # seconds: the health checks (3 s apart) follow a change of roles


def ops_of(preview: dict) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for step in preview["steps"]:
        if "digitalocean:" in step["urn"].split("::")[2]:
            found.setdefault(step["urn"].rpartition("::")[2], []).append(step["op"])
    return found


def account_ids(s: Droplets) -> dict[str, object]:
    """What the stand-in's account holds of this stack, by name: droplet ids and sizes, the
    VPC's and the firewall's ids."""
    state = s.client.state()
    droplets = {d["name"]: (d["id"], d["size_slug"]) for d in s.client.droplets()
                if d["name"].startswith("mastodon-db-life-")}  # fmt: skip
    vpcs = [v["id"] for v in state["vpcs"].values() if v["name"] == "mastodon-data-life"]
    firewalls = [f["id"] for f in state["firewalls"].values() if f["name"] == "mastodon-db-life"]
    return {"droplets": droplets, "vpcs": vpcs, "firewalls": firewalls}


def admin_key(workdir: Path) -> tuple[Path, str]:
    key = workdir / "admin2"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin2@example",
                    "-f", str(key)], check=True)  # fmt: skip
    return key, Path(f"{key}.pub").read_text().strip()


def ssh_as(key: Path, address: str) -> subprocess.CompletedProcess:
    argv = LAB.hosts.ssh_command(address, "true")
    argv[argv.index("-i") + 1] = str(key)
    return subprocess.run([*argv[:1], "-o", "IdentitiesOnly=yes", *argv[1:]],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.fixture(scope="module")
def life(tmp_path_factory):
    reason = lab_unavailable() or engine_gap()
    if reason:
        pytest.skip(reason)
    pack_venv()
    LAB.down()
    workdir = tmp_path_factory.mktemp("life")
    try:
        client = LAB.start()
        key = client.register_key("mlld-operator", LAB.hosts.ensure_operator_key())
        s = Droplets(LAB, client.url, key["id"], workdir, "life", VPC, 2,
                     replicaSize="s-2vcpu-4gb")  # fmt: skip
        yield s, workdir, client
    finally:
        write_figures("lifecycle_standin", FIGURES)
        rest = LAB.down()
        assert rest == [], f"the stand-in lab left: {rest}"


@pytest.fixture(scope="module")
def first(life):
    s, _, _ = life
    started = time.monotonic()
    result = s.apply()
    FIGURES["first_up_s"] = round(time.monotonic() - started, 1)
    return result


def test_first_up_makes_three_protected_droplets_that_replicate(life, first):
    s, _, _ = life
    code, out = check_replication(first["outputs"])
    assert code == 0, out
    assert first["outputs"]["primary"]["name"] == "db-0"
    assert [r["name"] for r in first["outputs"]["replicas"]] == ["db-1", "db-2"]
    state = json.loads(s.stack.pulumi("stack", "export"))["deployment"]["resources"]
    protected = sorted(r["urn"].rpartition("::")[2] for r in state if r.get("protect"))
    # the droplets and their data volumes
    assert protected == [f"db-pg15-{n}" for n in ("0", "0-data", "1", "1-data", "2", "2-data")]


@pytest.fixture(scope="module")
def changed(life, first):
    """A second admin key, another image, other sizes, the admin's key in authorizedKeys."""
    s, workdir, client = life
    key, public_key = admin_key(workdir)
    second = client.register_key("mlld-admin2", public_key)
    before = account_ids(s)
    primary = public(first["outputs"], "db-0")
    sysid = s.psql(primary, SYSID)
    s.config.update(
        sshKeyIds=[*s.config["sshKeyIds"], str(second["id"])],
        image="ubuntu-24-04-x64",
        primarySize="s-4vcpu-8gb",
        replicaSize="s-4vcpu-8gb",
        authorizedKeys=[public_key],
    )
    s.stack.configure(s.config, s.secrets)
    preview = json.loads(s.stack.preview("--json", "--show-replacement-steps"))
    started = time.monotonic()
    result = s.apply()
    FIGURES["resize_up_s"] = round(time.monotonic() - started, 1)
    outputs = result["outputs"]
    # Powered off and on: streaming again within two minutes (60 s was missed once in a full
    # clean-clone run on this 2-core machine; the cause is not known).
    for name in ("db-1", "db-2"):
        address = public(outputs, name)
        wait_until(lambda a=address: s.psql(a, "SELECT status FROM pg_stat_wal_receiver")
                   == "streaming", 120, f"{name} streaming")  # fmt: skip
    return {
        "preview": ops_of(preview),
        "before": before,
        "after": account_ids(s),
        "sysids": {n: s.psql(public(outputs, n), SYSID) for n in ("db-0", "db-1", "db-2")},
        "sysid": sysid,
        "logins": {n: ssh_as(key, public(outputs, n)).returncode for n in ("db-0", "db-1")},
        "check": check_replication(outputs),
        "changes": result["changes"],
    }


def test_keys_image_and_sizes_replace_nothing_and_resize_in_place(changed):
    ops = changed["preview"]
    assert ops == {f"db-pg15-{n}": ["update"] for n in range(3)}, ops
    assert "replace" not in changed["changes"] and "delete" not in changed["changes"]
    before, after = changed["before"]["droplets"], changed["after"]["droplets"]
    assert {n: i for n, (i, _) in after.items()} == {n: i for n, (i, _) in before.items()}
    assert {size for _, size in after.values()} == {"s-4vcpu-8gb"}
    assert set(changed["sysids"].values()) == {changed["sysid"]}  # the same database
    code, out = changed["check"]
    assert code == 0, out


def test_authorized_keys_let_the_new_admin_in_without_a_new_droplet(changed):
    assert changed["logins"] == {"db-0": 0, "db-1": 0}


@pytest.fixture(scope="module")
def failed_over(life, changed):
    s, _, _ = life
    outputs = s.stack.outputs()
    before = account_ids(s)
    old = public(outputs, "db-0")
    s.psql(old, "CREATE TABLE ledger (id int PRIMARY KEY)")
    s.psql(old, "INSERT INTO ledger SELECT generate_series(1, 500)")
    wait_until(lambda: s.psql(public(outputs, "db-1"), "SELECT count(*) FROM ledger") == "500",
               30, "rows on db-1")  # fmt: skip
    s.ssh(old, "kill -9 $(head -1 /var/lib/postgresql/15/main/postmaster.pid)")
    started = time.monotonic()
    result = subprocess.run(
        [COMMAND, "failover", "--stack", "life", "--cwd", str(s.stack.workdir), "promote",
         "db-1", "--known-hosts", str(LAB.hosts.known_hosts)],
        capture_output=True, text=True, timeout=1200, env=s.stack.env(),
    )  # fmt: skip
    FIGURES["failover_s"] = round(time.monotonic() - started, 1)
    if result.returncode != 0:  # the old primary's server log says why it did not stream
        tail = s.ssh(old, "tail -n 40 /var/log/postgresql/postgresql-15-main.log", check=False)
        raise AssertionError(f"{result.stderr[-3000:]}\n--- db-0's log:\n{tail}")
    summary = json.loads(result.stderr[result.stderr.index("{\n") :])
    outputs = json.loads(result.stdout)
    new = public(outputs, "db-1")
    s.psql(new, "INSERT INTO ledger SELECT generate_series(501, 600)")
    counts = {}
    for name in ("db-0", "db-2"):
        address = public(outputs, name)
        wait_until(lambda a=address: s.psql(a, "SELECT count(*) FROM ledger") == "600",
                   30, f"rows on {name}")  # fmt: skip
        counts[name] = s.psql(address, "SELECT count(*) FROM ledger")
    quiet = s.stack.preview("--refresh", "--expect-no-changes", check=False)
    return {
        "summary": summary,
        "outputs": outputs,
        "before": before,
        "after": account_ids(s),
        "counts": counts,
        "config": s.stack.config(),
        "quiet": (s.stack.last.returncode, quiet + s.stack.last.stderr),
        "check": check_replication(outputs),
    }


def test_failover_renames_and_replaces_nothing(failed_over):
    assert failed_over["after"] == failed_over["before"]  # same droplets, VPC and firewall
    assert failed_over["config"]["primaryNode"] == "1"
    assert "reseedReplicas" not in failed_over["config"]  # asked for once
    summary = failed_over["summary"]
    assert summary["promoted"] == "db-1" and summary["primary_node"] == 1
    assert summary["timeline"] == 2
    assert summary["rejoined"] == "db-0"
    assert any(c.startswith(("rewound", "re-seeded (former primary")) for c in summary["changed"])


def test_every_replica_streams_from_the_new_primary_and_the_env_points_at_it(failed_over):
    outputs = failed_over["outputs"]
    new_private = outputs["primary"]["private_address"]
    assert outputs["primary"]["name"] == "db-1"
    assert outputs["mastodon_env"]["DB_HOST"] == new_private
    assert sorted(r["name"] for r in outputs["replicas"]) == ["db-0", "db-2"]
    for name in ("db-0", "db-2"):
        (receiver,) = outputs["replication"][name]["receiver"]
        assert receiver["status"] == "streaming" and receiver["sender_host"] == new_private
    assert failed_over["counts"] == {"db-0": "600", "db-2": "600"}
    code, out = failed_over["check"]
    assert code == 0, out


def test_after_failover_the_stack_describes_reality(failed_over):
    code, out = failed_over["quiet"]
    assert code == 0, out[-3000:]


def reads_land_on_the_replicas_only(outputs: dict) -> None:
    """New connections through REPLICA_DB_HOST (the load balancer) reach every replica of the
    outputs and nothing else (the primary least of all), once its health checks caught up."""
    env, replicas = outputs["mastodon_env"], {r["private_address"] for r in outputs["replicas"]}
    assert env["REPLICA_DB_HOST"] not in replicas | {outputs["primary"]["private_address"]}
    wait_until(lambda: set(spread(env, 12)[0]) == replicas, READ_ENDPOINT_WAIT,
               "new connections on exactly the replicas")  # fmt: skip
    seen, failures = spread(env, 24)
    assert (set(seen), failures) == (replicas, 0), seen


def test_after_failover_the_read_endpoint_serves_the_new_replicas(failed_over):
    reads_land_on_the_replicas_only(failed_over["outputs"])


@pytest.fixture(scope="module")
def switched(life, failed_over):
    s, _, _ = life
    env = failed_over["outputs"]["mastodon_env"]
    with WriteLoad(env, clients=8) as load:
        time.sleep(2)
        result = subprocess.run(
            [COMMAND, "switchover", "--stack", "life", "--cwd", str(s.stack.workdir), "db-2",
             "--known-hosts", str(LAB.hosts.known_hosts)],
            capture_output=True, text=True, timeout=1200, env=s.stack.env(),
        )  # fmt: skip
        time.sleep(2)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stderr[result.stderr.rindex("\n{\n") + 1 :])
    FIGURES["switchover_longest_write_pause_s"] = load.longest_pause_s
    FIGURES["switchover_paused_s"] = summary["paused_s"]
    outputs = json.loads(result.stdout)
    rows = s.psql(public(outputs, "db-2"), f"SELECT client || ',' || n FROM {TABLE}").splitlines()
    quiet = s.stack.preview("--refresh", "--expect-no-changes", check=False)
    return {
        "summary": summary,
        "outputs": outputs,
        "load": load,
        "rows": {tuple(map(int, row.split(","))) for row in rows},
        "config": s.stack.config(),
        "quiet": (s.stack.last.returncode, quiet + s.stack.last.stderr),
    }


def test_a_switchover_fails_no_client_and_loses_no_row(switched):
    load = switched["load"]
    assert load.errors == []
    assert len(load.rows) > 100 and switched["rows"] == load.rows
    summary = switched["summary"]
    assert (summary["old_primary"], summary["switched_to"], summary["rewind"]) == (
        "db-1", "db-2", False,
    )  # fmt: skip


def test_after_a_switchover_the_stack_is_as_after_a_failover(switched):
    outputs = switched["outputs"]
    new_private = outputs["primary"]["private_address"]
    assert outputs["primary"]["name"] == "db-2" and switched["config"]["primaryNode"] == "2"
    assert outputs["mastodon_env"]["DB_HOST"] == new_private
    for name in ("db-0", "db-1"):
        (receiver,) = outputs["replication"][name]["receiver"]
        assert (receiver["status"], receiver["sender_host"]) == ("streaming", new_private)
    code, out = switched["quiet"]
    assert code == 0, out[-3000:]


def test_after_a_switchover_the_read_endpoint_serves_the_new_replicas(switched):
    reads_land_on_the_replicas_only(switched["outputs"])


def test_protected_droplets_stop_destroy_until_protection_is_off_for_a_run(life, switched):
    s, _, _ = life
    s.stack.pulumi("destroy", "--yes", "--skip-preview", check=False)
    refused = " ".join((s.stack.last.stdout + s.stack.last.stderr).split())
    assert s.stack.last.returncode != 0
    assert "cannot be deleted because it is protected" in refused
    assert len(account_ids(s)["droplets"]) == 3
    s.apply(protectData=False, primaryNode=2)  # the switchover set primaryNode in the stack
    s.stack.destroy()
    assert account_ids(s) == {"droplets": {}, "vpcs": [], "firewalls": []}
