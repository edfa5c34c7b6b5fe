"""Droplets mode end to end on the DigitalOcean stand-in: the real engine and the real
DigitalOcean provider make VPCs, tags, droplets (lab hosts) and firewalls (nftables in the hosts),
and the replication steps run on them over SSH.

The provider's own waits (10 s before it looks at a new droplet, 10 s per action, 20 s per
deletion) add up, so three stacks run at once, each in a flow of its own that records what it
saw; each test checks one step of one flow:
- alpha, on Debian 13 droplets (`image: debian-13-x64`, the lab's Debian 13 image) with
  PostgreSQL 17: up; the firewall enforced; a refreshed preview with no changes that passes the
  policy pack; replicaCount 2 -> 3 -> 2; destroy;
- bravo (Debian 12 and PostgreSQL 15, as charlie): up; a replica resized through the program;
  that replica deleted behind the program's back, refreshed away and made again by `pulumi up`;
  destroy;
- charlie: up and destroy while the stand-in answers 404 right after create, 429 with
  Retry-After, and slowly.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from enginekit import POLICY, pack_venv
from labkit import lab_unavailable, write_figures
from standinkit import (
    LAB,
    LISTENER,
    PROBE,
    Droplets,
    Flow,
    check_replication,
    public,
    tcp,
    wait_until,
)

from lab import rootfs
from lab.stack import engine_gap
from lab.standin.client import coverage
from lab.standin.firewall import TABLE
from lab.standin.server import client_label
from lab.standin.stack import PROVIDER_KEY

pytestmark = [pytest.mark.engine, pytest.mark.lab]
OPERATOR = LAB.operator_address  # 10.241.1.1: the stacks' adminCidrs
ALLOWED = "10.240.1.0/25"  # alpha's postgresAllowedSources (the operator, .1, is in it)
OUTSIDER_VPC = "10.240.1.200"  # in alpha's VPC, outside the allowed sources
OUTSIDER_PUBLIC = "10.241.1.200"  # on the public network, outside adminCidrs
BUCKET = "charlie-media"  # charlie also has media: a Spaces bucket, its CORS, a key, the CDN
CHARLIE_FAULTS = {
    "not_found_after_create": {"droplets": 2},
    "rate_limit_every": 5,
    "retry_after": 1,
    "slow_actions": 12.0,
}


def pack_args(workdir: Path) -> tuple[str, ...]:
    """The policy pack with allowedCidrs = the lab's public network, as an operator sets it."""
    document = json.loads((POLICY / "config.json").read_text())
    document["ssh-only-from-admin-cidrs"]["allowedCidrs"] = [LAB.public_network]
    document["data-kept"]["allowDataLoss"] = True  # alpha removes a droplet on purpose
    path = workdir / "policy-config.json"
    path.write_text(json.dumps(document))
    return ("--policy-pack", str(POLICY), "--policy-pack-config", str(path))


ALPHA_IMAGE, ALPHA_VERSION = "debian-13-x64", 17
# On a droplet: its Debian major, its clusters, its data volume's file system.
SYSTEM = (
    "cut -d. -f1 /etc/debian_version; pg_lsclusters -h | cut -d' ' -f1-4; "
    "findmnt -n -o FSTYPE /mnt/mastodon-data"
)


def status(outputs: dict, host: str) -> dict:
    return outputs["replication"][host]


def alpha(flow: Flow, ctx: dict) -> None:
    s = Droplets(**ctx, name="alpha", vpc="10.240.1.0/24", replicas=2,
                 postgresAllowedSources=[ALLOWED], protectData=False, image=ALPHA_IMAGE,
                 postgresVersion=ALPHA_VERSION)  # fmt: skip
    first = s.apply()
    outputs = first["outputs"]
    systems = {r: s.ssh(public(outputs, r), SYSTEM) for r in ("db-0", "db-1", "db-2")}
    poolers = {n: r["probe"] for n, r in s.stack.step_reports().items() if n.startswith("pooler-")}
    flow.record("up", **first, check=check_replication(outputs), systems=systems,
                poolers=poolers, images=[d["image"]["slug"] for d in s.client.droplets()
                                         if "-alpha-" in d["name"]])  # fmt: skip

    # The firewall, from outside and inside.
    vpc = s.client.state()["vpcs"][outputs["vpc_id"]]
    in_vpc = LAB.hosts.add_probe(1, f"vpc{vpc['index']}", OUTSIDER_VPC, 24)
    on_public = LAB.hosts.add_probe(2, "pub", OUTSIDER_PUBLIC, 24)
    listener = subprocess.Popen(
        ["ip", "netns", "exec", in_vpc, sys.executable, "-c", LISTENER, "5432", "2222"]
    )
    try:
        time.sleep(0.5)
        primary = outputs["primary"]
        private, pub = primary["private_address"], primary["public_address"]
        replica = outputs["replicas"][0]["private_address"]
        probes = {
            "operator -> primary private:5432": tcp(private, 5432),
            "vpc outsider -> primary private:5432": tcp(private, 5432, in_vpc),
            "vpc outsider -> replica private:5432": tcp(replica, 5432, in_vpc),
            "operator -> primary private:6432": tcp(private, 6432),
            "operator -> replica private:6432": tcp(replica, 6432),
            "vpc outsider -> primary private:6432": tcp(private, 6432, in_vpc),
            "operator -> primary public:22": tcp(pub, 22),
            "public outsider -> primary public:22": tcp(pub, 22, on_public),
            "vpc outsider -> primary private:22": tcp(private, 22, in_vpc),
            "operator via the vpc -> primary private:22": tcp(private, 22),
        }
        for port in (5432, 2222):
            out = s.ssh(pub, f"python3 -c {shlex.quote(PROBE)} {OUTSIDER_VPC} {port} 2")
            probes[f"primary -> vpc outsider:{port}"] = out
        # The cloud firewall is the stand-in's, outside the droplet: read in its namespace.
        machine = s.client.state()["droplets"][str(s.droplet(0)["id"])]
        ruleset = LAB.hosts.ns_run(machine, "nft", "list", "table", "inet", TABLE).stdout
    finally:
        listener.kill()
        listener.wait(10)
    flow.record("firewall", probes=probes, ruleset=ruleset, check=check_replication(outputs))

    # Nothing drifts: a refreshed preview is quiet, and the policy pack passes it.
    quiet = s.stack.preview("--refresh", "--expect-no-changes", *ctx_pack(ctx), check=False)
    flow.record("quiet", rc=s.stack.last.returncode, out=quiet + s.stack.last.stderr)

    # A third replica: the policy pack on its preview, then up.
    before = outputs
    s.config["replicaCount"] = 3
    s.stack.configure(s.config, s.secrets)
    preview = s.stack.preview(*ctx_pack(ctx), check=False)
    plan = {"rc": s.stack.last.returncode, "out": preview + s.stack.last.stderr}
    three = s.apply()
    flow.record(
        "three", before=before, plan=plan, **three, check=check_replication(three["outputs"])
    )

    # Back to two: db-3's droplet goes, its slot with it.
    two = s.apply(replicaCount=2)
    primary_pub = public(two["outputs"], "db-0")
    slots = s.psql(primary_pub, "SELECT slot_name FROM pg_replication_slots ORDER BY 1")
    names = sorted(d["name"] for d in s.client.droplets() if "-alpha-" in d["name"])
    flow.record("two", **two, slots=slots.split(), droplets=names,
                check=check_replication(two["outputs"]))  # fmt: skip

    # Destroy: nothing of the stack is left in the account or on the machine.
    hosts = [
        f"{LAB.prefix}-d{d['host']}"
        for d in s.client.state()["droplets"].values()
        if "-alpha-" in d["name"]
    ]
    s.stack.destroy()
    account = s.client.state()
    flow.record(
        "destroy",
        droplets=[d["name"] for d in account["droplets"].values() if "-alpha-" in d["name"]],
        vpcs=[v["name"] for v in account["vpcs"].values() if v["name"].endswith("-alpha")],
        firewalls=[f["name"] for f in account["firewalls"].values() if "alpha" in f["name"]],
        tags=[t["name"] for t in account["tags"].values() if "-alpha-" in t["name"]],
        hosts=hosts,
        hosts_left=[h for h in hosts if h in namespaces()],
        outputs=json.loads(s.stack.pulumi("stack", "output", "--json")),
    )


def replica_pool_in_recovery(env: dict) -> bool:
    """One query through the replica's pool, as Mastodon's REPLICA_DB_* say (after a power
    cycle: PgBouncer started at boot, as its enabled unit would be)."""
    with psycopg.connect(
        host=env["REPLICA_DB_HOST"], port=env["REPLICA_DB_PORT"], dbname=env["REPLICA_DB_NAME"],
        user=env["REPLICA_DB_USER"], password=env["REPLICA_DB_PASS"], sslmode=env["DB_SSLMODE"],
        connect_timeout=10, prepare_threshold=None, autocommit=True,
    ) as conn:  # fmt: skip
        return conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]


def bravo(flow: Flow, ctx: dict) -> None:
    s = Droplets(**ctx, name="bravo", vpc="10.240.2.0/24", replicas=1)
    first = s.apply()
    flow.record("up", **first, check=check_replication(first["outputs"]))
    outputs = first["outputs"]
    primary, replica = public(outputs, "db-0"), public(outputs, "db-1")

    # Resize the replica through the program (replicaSize): off, resize, on.
    s.psql(primary, "CREATE TABLE standin_probe (v text); INSERT INTO standin_probe VALUES ('1')")
    s.ssh(replica, "touch /var/lib/postgresql/standin-marker")
    identity = "SELECT system_identifier FROM pg_control_system()"
    started = "SELECT pg_postmaster_start_time()"
    before = {"sysid": s.psql(replica, identity), "start": s.psql(replica, started)}
    resized = s.apply(replicaSize="s-2vcpu-4gb")
    streaming = wait_until(
        lambda: s.psql(replica, "SELECT status FROM pg_stat_wal_receiver") == "streaming",
        60,
        "the resized replica streaming",
    )
    s.psql(primary, "INSERT INTO standin_probe VALUES ('2')")
    caught_up = wait_until(
        lambda: s.psql(replica, "SELECT count(*) FROM standin_probe") == "2", 20, "row 2"
    )
    flow.record(
        "resize",
        **resized,
        pool_after=replica_pool_in_recovery(resized["outputs"]["mastodon_env"]),
        before=before,
        after={"sysid": s.psql(replica, identity), "start": s.psql(replica, started)},
        size=s.droplet("1")["size_slug"],
        marker=s.ssh(replica, "ls /var/lib/postgresql/standin-marker", check=False),
        streaming_after=streaming,
        caught_up_after=caught_up,
        check=check_replication(resized["outputs"]),
    )

    # The replica's droplet deleted behind the program's back.
    gone = s.droplet("1")
    s.client.delete_droplet(gone["id"])
    s.stack.pulumi("refresh", "--yes", "--suppress-progress")
    refreshed = s.stack.last.stdout
    refresh_changes = s.stack.last_changes()
    again = s.apply()
    new = s.droplet("1")
    replica = public(again["outputs"], "db-1")
    s.psql(primary, "INSERT INTO standin_probe VALUES ('3')")
    wait_until(lambda: s.psql(replica, "SELECT count(*) FROM standin_probe") == "3", 20, "row 3")
    flow.record(
        "recreated",
        **again,
        old_id=gone["id"],
        new_id=new["id"],
        refreshed=refreshed,
        refresh_changes=refresh_changes,
        sysid=s.psql(replica, identity),
        primary_sysid=s.psql(primary, identity),
        check=check_replication(again["outputs"]),
    )
    s.apply(protectData=False)  # the droplets are protected: destroy needs that off first
    s.stack.destroy()
    flow.record(
        "destroy", droplets=[d["name"] for d in s.client.droplets() if "-bravo-" in d["name"]]
    )


def charlie(flow: Flow, ctx: dict) -> None:
    s = Droplets(**ctx, name="charlie", vpc="10.240.3.0/24", replicas=0, spacesBucket=BUCKET)
    s.client.set_faults({s.client.token: CHARLIE_FAULTS})  # this stack's token only
    first = s.apply()
    check = check_replication(first["outputs"])
    account = s.client.state()
    quiet = s.stack.preview("--refresh", "--expect-no-changes", check=False)
    quiet = {"rc": s.stack.last.returncode, "out": quiet + s.stack.last.stderr}
    s.apply(protectData=False)  # the droplets and the bucket are protected
    started = time.monotonic()
    s.stack.destroy()
    destroyed = round(time.monotonic() - started, 1)
    mine = [e for e in s.client.log() if e.get("client") == client_label(s.client.token)]
    after = s.client.state()
    flow.record(
        "faults",
        **first,
        destroy_seconds=destroyed,
        faulted=[(e["method"], e["route"], e["status"]) for e in mine if e.get("fault")],
        requests=len(mine),
        check=check,
        bucket=account["buckets"].get(BUCKET),
        spaces_keys=list(account.get("spaces_keys", {}).values()),
        cdns=list(account.get("cdns", {}).values()),
        quiet=quiet,
        left={k: after.get(k) for k in ("buckets", "spaces_keys", "cdns")},
        s3=[e["route"] for e in s.client.log() if str(e.get("host", "")).endswith(".spaces.test")],
    )


def ctx_pack(ctx: dict) -> tuple[str, ...]:
    return pack_args(ctx["workdir"])


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return sorted(line.split()[0] for line in out.splitlines())


@pytest.fixture(scope="module")
def flows(tmp_path_factory):
    reason = lab_unavailable() or engine_gap()
    if reason:
        pytest.skip(reason)
    if not rootfs.built(rootfs.image_dir()):
        pytest.fail(f"the Debian 13 image {rootfs.image_dir()} is not built: run `make rootfs`")
    pack_venv()
    LAB.down()
    started = time.monotonic()
    running: dict[str, Flow] = {}
    try:
        client = LAB.start()
        key = client.register_key(f"{LAB.prefix}-operator", LAB.hosts.ensure_operator_key())
        ctx = {"lab": LAB, "url": client.url, "key_id": key["id"],
               "workdir": tmp_path_factory.mktemp("standin")}  # fmt: skip
        for name, body in (("alpha", alpha), ("bravo", bravo), ("charlie", charlie)):
            running[name] = Flow(name, lambda flow, body=body: body(flow, {**ctx}))
            running[name].thread.start()
        yield running
        for flow in running.values():
            flow.thread.join(60)
        seen = coverage(client.endpoints(), client.log())
        write_figures(
            "standin_droplets",
            {
                "wall_seconds": round(time.monotonic() - started, 1),
                "steps": {
                    n: {k: v["at_seconds"] for k, v in f.facts.items()} for n, f in running.items()
                },  # fmt: skip
                "endpoints": seen,
            },
        )
    finally:
        keep_logs()
        rest = LAB.down()
        assert rest == [], f"the stand-in lab left: {rest}"


def keep_logs() -> None:
    """The stand-in's own log and its request log, in results/ (ignored by git), for a failure."""
    out = Path(__file__).resolve().parents[2] / "results"
    out.mkdir(exist_ok=True)
    for name in ("standin.log", "requests.jsonl"):
        if (LAB.state_dir / name).exists():
            shutil.copy(LAB.state_dir / name, out / f"standin_droplets.{name}.tmp")


# --- alpha ---------------------------------------------------------------------------------


def test_up_makes_droplets_that_replicate(flows):
    up = flows["alpha"].wait("up")
    assert up["check"][0] == 0, up["check"][1]
    # 17, per droplet a volume, its attachment, its volume, pooler and health steps, and the
    # read endpoint (replicaLoadBalancer auto with 2 replicas: its component, the load balancer)
    assert up["changes"] == {"create": 34}
    outputs = up["outputs"]
    assert [r["name"] for r in outputs["replicas"]] == ["db-1", "db-2"]
    for replica in ("db-1", "db-2"):
        report = status(outputs, replica)
        assert report["receiver"][0]["status"] == "streaming"
        assert report["system_identifier"] == status(outputs, "db-0")["system_identifier"]
    assert outputs["mastodon_env"]["DB_HOST"] == outputs["primary"]["private_address"]
    read_host = outputs["read_endpoint"]["private_host"]
    assert outputs["mastodon_env"]["REPLICA_DB_HOST"] == read_host
    assert read_host.startswith("10.240.1.")
    assert outputs["primary"]["private_address"].startswith("10.240.1.")
    assert outputs["primary"]["public_address"].startswith("10.241.1.")


def test_alpha_runs_debian_13_and_postgresql_17_on_each_data_volume(flows):
    up = flows["alpha"].wait("up")
    assert up["images"] == [ALPHA_IMAGE] * 3
    recovery = {"db-0": "online", "db-1": "online,recovery", "db-2": "online,recovery"}
    assert up["systems"] == {
        role: f"13\n{ALPHA_VERSION} main 5432 {status}\next4" for role, status in recovery.items()
    }
    assert sorted(up["poolers"].values()) == ["ok", "ok", "ok"], up["poolers"]


def test_firewall_keeps_5432_and_the_pools_from_hosts_outside_the_allowed_sources(flows):
    probes = flows["alpha"].wait("firewall")["probes"]
    assert probes["operator -> primary private:5432"] == "open"
    assert probes["vpc outsider -> primary private:5432"] == "timeout"  # dropped, not refused
    assert probes["vpc outsider -> replica private:5432"] == "timeout"
    # The pools' port: the same sources only.
    assert probes["operator -> primary private:6432"] == "open"
    assert probes["operator -> replica private:6432"] == "open"
    assert probes["vpc outsider -> primary private:6432"] == "timeout"


def test_ssh_answers_only_from_admin_cidrs(flows):
    probes = flows["alpha"].wait("firewall")["probes"]
    assert probes["operator -> primary public:22"] == "open"
    assert probes["public outsider -> primary public:22"] == "timeout"
    assert probes["vpc outsider -> primary private:22"] == "timeout"
    assert probes["operator via the vpc -> primary private:22"] == "timeout"  # not adminCidrs


def test_outbound_goes_only_where_the_outbound_rules_say(flows):
    found = flows["alpha"].wait("firewall")
    assert found["probes"]["primary -> vpc outsider:5432"] == "open"  # tcp 5432 to the VPC
    assert found["probes"]["primary -> vpc outsider:2222"] in ("timeout", "blocked")  # dropped
    assert "policy drop" in found["ruleset"]


def test_replication_still_works_behind_the_firewall(flows):
    code, out = flows["alpha"].wait("firewall")["check"]
    assert code == 0, out
    assert out.count("replica, streaming") == 2


def test_refreshed_preview_has_no_changes_and_passes_the_policy_pack(flows):
    quiet = flows["alpha"].wait("quiet")
    assert quiet["rc"] == 0, quiet["out"][-3000:]
    assert "Policies:" in quiet["out"] and "mastodon-data@v0.1.0" in quiet["out"]
    assert "34 unchanged" in quiet["out"]


def test_a_third_replica_is_seeded_and_the_others_are_untouched(flows):
    three = flows["alpha"].wait("three")
    assert three["plan"]["rc"] == 0, three["plan"]["out"][-3000:]
    assert "mastodon-data@v0.1.0" in three["plan"]["out"]
    before, after = three["before"], three["outputs"]
    assert three["check"][0] == 0, three["check"][1]
    sysid = status(before, "db-0")["system_identifier"]
    new = status(after, "db-3")
    assert new["receiver"][0]["status"] == "streaming" and new["system_identifier"] == sysid
    for replica in ("db-1", "db-2"):
        old, now = status(before, replica), status(after, replica)
        assert now["system_identifier"] == old["system_identifier"] == sysid
        assert now["postmaster_start_time"] == old["postmaster_start_time"]
    # the droplet, its volume, attachment and volume step, its replica, status, pooler and
    # health steps
    assert three["changes"]["create"] == 8


def test_back_to_two_replicas_drops_the_removed_ones_slot(flows):
    two = flows["alpha"].wait("two")
    assert two["check"][0] == 0, two["check"][1]
    assert two["slots"] == ["mdata_db_1", "mdata_db_2"]
    assert two["droplets"] == [f"mastodon-db-alpha-{n}" for n in range(3)]
    assert two["changes"]["delete"] == 8  # the droplet, its volume and attachment, 5 steps


def test_destroy_leaves_nothing_of_the_stack(flows):
    gone = flows["alpha"].wait("destroy")
    assert gone["droplets"] == gone["vpcs"] == gone["firewalls"] == gone["tags"] == []
    assert len(gone["hosts"]) == 3 and gone["hosts_left"] == []
    assert gone["outputs"] == {}


# --- bravo ---------------------------------------------------------------------------------


def test_a_resized_replica_keeps_its_data_and_streams_again(flows):
    resize = flows["bravo"].wait("resize")
    assert resize["size"] == "s-2vcpu-4gb"
    assert resize["changes"].get("update") == 1 and set(resize["changes"]) == {"update", "same"}
    assert resize["after"]["sysid"] == resize["before"]["sysid"]  # the same cluster, not cloned
    assert resize["after"]["start"] != resize["before"]["start"]  # it was powered off and on
    assert resize["marker"].endswith("standin-marker")  # its disk kept
    assert resize["pool_after"] is True  # its pool serves again, from the standby
    assert resize["check"][0] == 0, resize["check"][1]


def test_a_replica_deleted_behind_the_programs_back_is_made_and_seeded_again(flows):
    found = flows["bravo"].wait("recreated")
    assert "deleted" in found["refreshed"]
    assert found["refresh_changes"].get("delete") == 2  # the droplet and its attachment
    assert found["new_id"] != found["old_id"]
    assert found["changes"].get("create") == 2  # the droplet, attached again; steps replaced
    assert found["sysid"] == found["primary_sysid"]
    assert found["check"][0] == 0, found["check"][1]
    assert flows["bravo"].wait("destroy")["droplets"] == []


# --- charlie -------------------------------------------------------------------------------


def test_the_provider_copes_with_404_after_create_429_and_slow_actions(flows):
    found = flows["charlie"].wait("faults")
    assert found["check"][0] == 0, found["check"][1]
    statuses = [code for _, _, code in found["faulted"]]
    assert statuses.count(404) >= 2 and 429 in statuses
    assert ("GET", "GET /v2/droplets/{id}", 404) in found["faulted"]
    assert found["seconds"] >= CHARLIE_FAULTS["slow_actions"]


def test_media_bucket_cors_key_and_cdn_through_spaces_and_the_api(flows):
    found = flows["charlie"].wait("faults")
    assert found["bucket"]["acl"] == "private" and found["bucket"]["region"] == "nyc3"
    (rule,) = found["bucket"]["cors"]
    assert sorted(rule["AllowedMethod"]) == ["GET", "HEAD"] and rule["AllowedOrigin"] == ["*"]
    (provider,) = [k for k in found["spaces_keys"] if k["name"] == PROVIDER_KEY]
    assert provider["grants"] == [{"bucket": "", "permission": "fullaccess"}]
    (key,) = [k for k in found["spaces_keys"] if k["name"] != PROVIDER_KEY]
    assert key["grants"] == [{"bucket": BUCKET, "permission": "readwrite"}]
    (cdn,) = found["cdns"]
    assert cdn["origin"] == f"{BUCKET}.nyc3.digitaloceanspaces.com"
    assert found["outputs"]["media"]["bucket"] == BUCKET
    assert "S3 PUT /{bucket}?cors" in found["s3"] and "S3 GET /{bucket}?cors" in found["s3"]
    assert found["quiet"]["rc"] == 0, found["quiet"]["out"][-3000:]
    assert found["left"] == {"buckets": {}, "spaces_keys": {provider["access_key"]: provider},
                             "cdns": {}}  # fmt: skip


def test_every_request_the_provider_sent_was_implemented(flows):
    for flow in ("alpha", "bravo", "charlie"):
        flows[flow].wait("destroy" if flow != "charlie" else "faults")
    client = LAB.running()
    seen = coverage(client.endpoints(), client.log())
    assert seen["unimplemented_requests"] == {}
    for route in (
        "POST /v2/vpcs",
        "POST /v2/droplets",
        "GET /v2/droplets/{id}",
        "POST /v2/droplets/{id}/actions",
        "GET /v2/actions/{action}",
        "PUT /v2/firewalls/{id}",
        "DELETE /v2/droplets/{id}",
        "DELETE /v2/vpcs/{id}",
    ):
        assert route in seen["called"], route
