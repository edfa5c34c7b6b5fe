"""Data on volumes through the engine, droplets mode on a stand-in lab of this test's own: each
database droplet's PostgreSQL lives on a DigitalOcean Volume (a loop device here). A droplet
replaced on purpose (`pulumi up --replace` of the primary's droplet) gets its volume back, and
the cluster comes back with the same system identifier and every row; a bigger `dataVolumeSize`
is an update in place (no replacement of anything holding data) that grows the filesystem on
the hosts; a smaller one is refused at preview time; destroy leaves no volume, loop device or
file behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from labkit import lab_unavailable
from standinkit import Droplets, Flow, check_replication, public, wait_until

from lab.stack import engine_gap
from lab.standin.service import StandInLab

pytestmark = [pytest.mark.engine, pytest.mark.lab]
LAB = StandInLab(
    prefix="mlvd",
    public_network="10.241.20.0/24",
    vpc_pool=("10.240.20.0/24", "10.240.21.0/24"),
    state_dir=Path("/var/lib/mastodon-lab-vol-do"),
)
ROWS = 5000
IDENTITY = "SELECT system_identifier FROM pg_control_system()"
COUNT = "SELECT count(*), sum(n) FROM volume_probe"
DATA_TYPES = ("digitalocean:index/volume:Volume", "digitalocean:index/droplet:Droplet")


def volumes_of(s: Droplets) -> dict[str, dict]:
    """The stack's volumes in the account, by name."""
    return {
        v["name"]: v for v in s.client.state()["volumes"].values() if f"-{s.name}-" in v["name"]
    }


def mounted(s: Droplets, address: str) -> str:
    """Where the host's PostgreSQL directory comes from, and the filesystem's size in bytes."""
    return s.ssh(address, "findmnt -n -o SOURCE,FSTYPE,SIZE -b /mnt/mastodon-data")


def preview_steps(s: Droplets, *extra: str) -> tuple[int, list[dict], str]:
    out = s.stack.preview("--json", *extra, check=False)
    run = s.stack.last
    steps = json.loads(out).get("steps", []) if run.returncode == 0 else []
    return run.returncode, [{"op": x["op"], "urn": x["urn"]} for x in steps], out + run.stderr


def story(flow: Flow, ctx: dict) -> None:
    s = Droplets(**ctx, name="delta", vpc="10.240.20.0/24", replicas=1)
    # Replacing a droplet on purpose is what protectData (on by default) refuses.
    first = s.apply(protectData=False)
    outputs = first["outputs"]
    primary = public(outputs, "db-0")
    replica = public(outputs, "db-1")
    s.psql(primary, "CREATE TABLE volume_probe (n int)")
    s.psql(primary, f"INSERT INTO volume_probe SELECT generate_series(1, {ROWS})")
    wait_until(lambda: s.psql(replica, COUNT).startswith(f"{ROWS}|"), 30, "rows on the replica")
    flow.record(
        "up",
        **first,
        check=check_replication(outputs),
        volumes=volumes_of(s),
        droplets={d["name"]: d["id"] for d in s.client.droplets()},
        mounted={"db-0": mounted(s, primary), "db-1": mounted(s, replica)},
        reports=s.stack.step_reports(),
        sysid=s.psql(primary, IDENTITY),
        rows=s.psql(primary, COUNT),
    )
    quiet = s.stack.preview("--refresh", "--expect-no-changes", check=False)
    flow.record("quiet", rc=s.stack.last.returncode, out=quiet + s.stack.last.stderr)

    # The primary's droplet replaced on purpose: the same volume comes back on the new one.
    old = s.droplet(0)
    urn = next(
        r["urn"]
        for r in json.loads(s.stack.pulumi("stack", "export"))["deployment"]["resources"]
        if r["type"] == DATA_TYPES[1] and r["urn"].endswith("::db-pg15-0")
    )
    replace_plan = preview_steps(s, "--replace", urn)
    s.stack.up("--replace", urn)
    outputs = s.stack.outputs()
    primary = public(outputs, "db-0")
    s.psql(primary, f"INSERT INTO volume_probe VALUES ({ROWS + 1})")
    wait_until(
        lambda: s.psql(replica, COUNT).startswith(f"{ROWS + 1}|"), 60, "the new row replicated"
    )
    flow.record(
        "replaced",
        plan=replace_plan,
        old_id=old["id"],
        new_id=s.droplet(0)["id"],
        droplet_names=sorted(d["name"] for d in s.client.droplets()),
        volumes=volumes_of(s),
        mounted=mounted(s, primary),
        sysid=s.psql(primary, IDENTITY),
        replica_sysid=s.psql(replica, IDENTITY),
        rows=s.psql(primary, COUNT),
        replica_rows=s.psql(replica, COUNT),
        reports=s.stack.step_reports(),
        check=check_replication(outputs),
    )

    # Bigger volumes: an update in place, the filesystems grown on the hosts.
    s.config["dataVolumeSize"] = 2
    s.stack.configure(s.config, s.secrets)
    plan = preview_steps(s)
    grown = s.apply()
    flow.record(
        "grown",
        plan=plan,
        **grown,
        volumes=volumes_of(s),
        mounted={"db-0": mounted(s, primary), "db-1": mounted(s, replica)},
        reports=s.stack.step_reports(),
        rows=s.psql(primary, COUNT),
        replica_rows=s.psql(replica, COUNT),
        sysid=s.psql(primary, IDENTITY),
        check=check_replication(grown["outputs"]),
    )

    # Smaller: refused before anything is touched.
    s.config["dataVolumeSize"] = 1
    s.stack.configure(s.config, s.secrets)
    refused = preview_steps(s)
    s.config["dataVolumeSize"] = 2
    s.stack.configure(s.config, s.secrets)
    flow.record("shrink", refused=refused, volumes=volumes_of(s))

    s.stack.destroy()
    flow.record(
        "destroy",
        volumes=volumes_of(s),
        loops=LAB.hosts.volume_loops(),
        files=sorted(p.name for p in (LAB.state_dir / "volumes").glob("*")),
    )


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    reason = lab_unavailable() or engine_gap()
    if reason:
        pytest.skip(reason)
    LAB.down()
    try:
        client = LAB.start()
        key = client.register_key(f"{LAB.prefix}-operator", LAB.hosts.ensure_operator_key())
        ctx = {"lab": LAB, "url": client.url, "key_id": key["id"],
               "workdir": tmp_path_factory.mktemp("volumes")}  # fmt: skip
        running = Flow("delta", lambda f: story(f, ctx))
        running.thread.start()
        yield running
        running.thread.join(60)
    finally:
        rest = LAB.down()
        assert rest == [], f"the stand-in lab left: {rest}"


def test_each_database_droplet_keeps_postgresql_on_its_own_volume(flow):
    up = flow.wait("up")
    assert up["check"][0] == 0, up["check"][1]
    volumes = up["volumes"]
    assert sorted(volumes) == ["mastodon-db-delta-0-data", "mastodon-db-delta-1-data"]
    droplets = up["droplets"]
    for n in (0, 1):
        role = f"db-{n}"
        volume = volumes[f"mastodon-db-delta-{n}-data"]
        assert volume["size_gigabytes"] == 1
        assert volume["droplet_ids"] == [droplets[f"mastodon-db-delta-{n}"]]
        assert volume["filesystem_type"] == ""  # formatted by the volume step, not by DO
        source, fstype, size = up["mounted"][role].split()
        assert source.startswith("/dev/loop") and fstype == "ext4"
        assert int(size) > 0.9 * (1 << 30)
        report = up["reports"][f"volume-{role}"]
        assert report["changed"][:2] == ["formatted ext4", "mounted at /mnt/mastodon-data"]
        assert report["device"] == f"/dev/disk/by-id/scsi-0DO_Volume_mastodon-db-delta-{n}-data"
    assert up["rows"] == f"{ROWS}|{ROWS * (ROWS + 1) // 2}"
    # The stack, 3 components, VPC, the tag, 2 droplets, 2 volumes, 2 attachments, firewall,
    # 2 volume steps, 2 setup steps, the slots step, 2 reports, 2 pooler and 2 health steps.
    assert up["changes"] == {"create": 24}


def test_a_refreshed_preview_sees_no_drift(flow):
    quiet = flow.wait("quiet")
    assert quiet["rc"] == 0, quiet["out"]


def test_a_replaced_droplet_gets_its_volume_back_with_every_row(flow):
    up, replaced = flow.wait("up"), flow.wait("replaced")
    assert replaced["check"][0] == 0, replaced["check"][1]
    assert replaced["new_id"] != replaced["old_id"]
    assert replaced["droplet_names"] == ["mastodon-db-delta-0", "mastodon-db-delta-1"]
    name = "mastodon-db-delta-0-data"
    before, after = up["volumes"][name], replaced["volumes"][name]
    assert after["id"] == before["id"]  # the same volume, not a new one
    assert after["droplet_ids"] == [replaced["new_id"]]
    assert replaced["sysid"] == up["sysid"] == replaced["replica_sysid"]
    total = ROWS + 1
    assert replaced["rows"] == replaced["replica_rows"] == f"{total}|{total * (total + 1) // 2}"
    report = replaced["reports"]["volume-db-0"]
    assert "formatted ext4" not in report["changed"]
    assert report["changed"][0] == "mounted at /mnt/mastodon-data"
    assert "cluster created" not in replaced["reports"]["primary"]["changed"]
    # Replaced: the droplet and its attachment; no volume.
    rc, steps, out = replaced["plan"]
    assert rc == 0, out
    replacing = {s["urn"].rpartition("::")[2] for s in steps if s["op"] == "replace"}
    assert {"db-pg15-0", "db-pg15-0-data-attachment"} <= replacing
    # (a preview lists what changes: nothing of a volume)
    assert [s for s in steps if f"${DATA_TYPES[0]}::" in s["urn"]] == []


def test_a_bigger_volume_is_resized_in_place_and_the_filesystem_grown(flow):
    grown = flow.wait("grown")
    rc, steps, out = grown["plan"]
    assert rc == 0, out
    ops = {s["urn"].rpartition("::")[2]: s["op"] for s in steps if s["op"] != "same"}
    assert ops["db-pg15-0-data"] == "update" and ops["db-pg15-1-data"] == "update"
    data = [s for s in steps if any(f"${t}::" in s["urn"] for t in DATA_TYPES)]
    assert {s["op"] for s in data} == {"update"}, data  # the volumes; no droplet
    assert [s for s in steps if "VolumeAttachment" in s["urn"]] == []
    assert grown["check"][0] == 0, grown["check"][1]
    for n in (0, 1):
        role = f"db-{n}"
        assert grown["volumes"][f"mastodon-db-delta-{n}-data"]["size_gigabytes"] == 2
        assert int(grown["mounted"][role].split()[2]) > 1.9 * (1 << 30)
        assert grown["reports"][f"volume-{role}"]["changed"] == [
            "filesystem grown from 1.00 GiB to 2.00 GiB (offline: PostgreSQL stopped for it)"
        ]
        assert grown["reports"][f"volume-{role}"]["size_bytes"] == 2 << 30
    total = ROWS + 1
    assert grown["rows"] == grown["replica_rows"] == f"{total}|{total * (total + 1) // 2}"


def test_a_smaller_volume_is_refused_at_preview_time(flow):
    shrink = flow.wait("shrink")
    rc, steps, out = shrink["refused"]
    assert rc != 0
    assert "volumes `size` can only be expanded and not shrunk" in out
    sizes = {v["size_gigabytes"] for v in shrink["volumes"].values()}
    assert sizes == {2}


def test_destroy_leaves_no_volume_loop_device_or_file(flow):
    gone = flow.wait("destroy")
    assert gone == {"volumes": {}, "loops": [], "files": [], "at_seconds": gone["at_seconds"]}
