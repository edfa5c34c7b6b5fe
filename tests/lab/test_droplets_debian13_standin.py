"""Droplets made with `image: debian-13-x64` on a stand-in lab of this test's own run the Debian 13
image (lab/rootfs.py): a droplets stack with postgresVersion 17 through the real engine and
DigitalOcean provider (primary + 1 replica, each on its data volume) makes PostgreSQL 17 on
Debian 13, the replica streams, both pools answer their step's probe, and a second `up` changes
nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from labkit import lab_unavailable
from standinkit import Droplets, check_replication, public, wait_until

from lab import rootfs
from lab.stack import engine_gap
from lab.standin.service import StandInLab

pytestmark = [pytest.mark.engine, pytest.mark.lab]
LAB = StandInLab(
    prefix="ml13d",
    public_network="10.241.150.0/24",
    vpc_pool=("10.240.150.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-deb13-do"),
)
VERSION = 17
REPLAY_WAIT = 30  # seconds for a row to reach the replica (at rest: under a second)


@pytest.fixture(scope="module")
def trixie(tmp_path_factory):
    reason = lab_unavailable() or engine_gap()
    if reason:
        pytest.skip(reason)
    if not rootfs.built(rootfs.image_dir()):
        pytest.fail(f"the Debian 13 image {rootfs.image_dir()} is not built: run `make rootfs`")
    LAB.down()
    try:
        client = LAB.start()
        key = client.register_key(f"{LAB.prefix}-operator", LAB.hosts.ensure_operator_key())
        s = Droplets(
            lab=LAB, url=client.url, key_id=key["id"], workdir=tmp_path_factory.mktemp("trixie"),
            name="trixie", vpc="10.240.150.0/24", replicas=1, image="debian-13-x64",
            postgresVersion=VERSION,
        )  # fmt: skip
        yield s, s.apply()
    finally:
        rest = LAB.down()
        assert rest == [], f"the stand-in lab left: {rest}"


def test_the_droplets_run_debian_13_and_postgresql_17_on_their_volumes(trixie):
    s, first = trixie
    outputs = first["outputs"]
    for role, status in (("db-0", "online"), ("db-1", "online,recovery")):
        address = public(outputs, role)
        shown = s.ssh(
            address, "cut -d. -f1 /etc/debian_version; pg_lsclusters -h | cut -d' ' -f1-4"
        )
        assert shown.splitlines() == ["13", f"{VERSION} main 5432 {status}"]
        assert s.ssh(address, "findmnt -n -o FSTYPE /mnt/mastodon-data") == "ext4"
    assert s.client.droplet_named("mastodon-db-trixie-0")["image"]["slug"] == "debian-13-x64"


def test_the_replica_streams_and_both_pools_answer(trixie):
    s, first = trixie
    outputs = first["outputs"]
    code, report = check_replication(outputs)
    assert code == 0, report
    primary, replica = public(outputs, "db-0"), public(outputs, "db-1")
    s.psql(primary, "CREATE TABLE marks (mark int); INSERT INTO marks VALUES (17)")
    wait_until(lambda: s.psql(replica, "SELECT mark FROM marks") == "17", REPLAY_WAIT, "the row")
    reports = s.stack.step_reports()
    poolers = {name: r["probe"] for name, r in reports.items() if name.startswith("pooler-")}
    assert sorted(poolers.values()) == ["ok", "ok"], reports


def test_a_second_up_changes_nothing(trixie):
    s, first = trixie
    again = s.apply()
    assert set(again["changes"]) == {"same"}, again["changes"]
    assert again["changes"]["same"] == sum(first["changes"].values())
