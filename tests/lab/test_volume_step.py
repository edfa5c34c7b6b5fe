"""The volume step (host/volume.py) alone over SSH on lab hosts of this test's own, with loop
devices as data devices (hosts mode's dataDevice): a blank device is formatted and mounted, an
existing filesystem kept, a grown device's filesystem grown; another filesystem, a foreign ext4,
unnamed data and PostgreSQL files already on the root disk are refused, and nothing is formatted
then. And a hosts-mode stack through the engine whose two hosts name a dataDevice: the primary and
its replica run from their devices."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import volume
from labkit import applied, new_secrets, own_lab, run_one_step

from lab import namespaces as lab_hosts
from lab.stack import LabStack, engine_gap
from mastodon_data.cli.host_ssh import StepFailed

pytestmark = pytest.mark.lab
LAB = lab_hosts.Lab(
    prefix="mlv", subnet="10.230.0.0/24", state_dir=Path("/var/lib/mastodon-lab-vol")
)
MIB = 1 << 20


@pytest.fixture(scope="module")
def lab() -> Iterator[lab_hosts.Lab]:
    with own_lab(LAB, 5) as made:
        yield made


@pytest.fixture()
def loops(tmp_path) -> Iterator:
    """Makes loop devices over sparse files in tmp_path; detaches them afterwards."""
    made: list[str] = []

    def loop(name: str, size: int) -> tuple[str, Path]:
        backing = tmp_path / f"{name}.img"
        subprocess.run(["truncate", "-s", str(size), str(backing)], check=True)
        device = sh(["losetup", "-f", "--show", str(backing)])
        made.append(device)
        return device, backing

    with ExitStack() as cleanup:
        cleanup.callback(lambda: [sh(["losetup", "-d", d], check=False) for d in made])
        yield loop


def sh(argv: list[str], check: bool = True) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv}: {result.stderr}")
    return result.stdout.strip()


def on_host(index: int, command: str) -> str:
    return sh(LAB.ssh_command(LAB.host(index).address, command))


def volume_step(index: int, device: str, tmp_path: Path, secrets: dict) -> dict:
    """The volume step of host `index` with `device` as its dataDevice; its report."""
    config = lab_hosts.stack_config(LAB, 2, 3)
    config["hosts"][index - 1]["dataDevice"] = device
    out = run_one_step(config, secrets, f"volume-{LAB.host(index).name}", tmp_path)
    return json.loads(out.strip().splitlines()[-1])


def mounts_on(index: int) -> list[str]:
    """What the host has mounted at the data places (target, source), in order."""
    out = on_host(
        index,
        "findmnt -rn -o TARGET,SOURCE,FSTYPE /mnt/mastodon-data /etc/postgresql "
        "/var/lib/postgresql | grep -v ' none$' || true",
    )
    return out.splitlines()


def test_blank_device_formatted_mounted_grown_and_kept(lab, loops, tmp_path):
    secrets = new_secrets(lab)
    device, backing = loops("blank", 256 * MIB)
    first = volume_step(1, device, tmp_path, secrets)
    assert first["changed"] == [
        "formatted ext4",
        "mounted at /mnt/mastodon-data",
        "/etc/postgresql bound from the volume",
        "/var/lib/postgresql bound from the volume",
        "fstab entries written",
    ]
    assert sh(["blkid", "-p", "-o", "value", "-s", "TYPE", device]) == "ext4"
    assert sh(["blkid", "-p", "-o", "value", "-s", "LABEL", device]) == "pgdata"
    assert first["size_bytes"] == 256 * MIB
    number = sh(["lsblk", "-dn", "-o", "MAJ:MIN", device]).strip()
    found = on_host(1, f"awk '$3 == \"{number}\" {{print $3, $4, $5}}' /proc/self/mountinfo")
    assert found.splitlines() == [
        f"{number} / /mnt/mastodon-data",
        f"{number} /etc /etc/postgresql",
        f"{number} /lib /var/lib/postgresql",
    ]
    owners = on_host(1, "stat -c '%U:%G %a' /etc/postgresql /var/lib/postgresql")
    assert owners.splitlines() == ["postgres:postgres 755", "postgres:postgres 755"]
    fstab = on_host(1, "cat /etc/fstab").splitlines()
    assert fstab[-5:] == [
        "# BEGIN mastodon-data (managed: edits here are overwritten)",
        f"{device} /mnt/mastodon-data ext4 defaults,nofail,discard,noatime 0 2",
        "/mnt/mastodon-data/etc /etc/postgresql none "
        "bind,nofail,x-systemd.requires-mounts-for=/mnt/mastodon-data 0 0",
        "/mnt/mastodon-data/lib /var/lib/postgresql none "
        "bind,nofail,x-systemd.requires-mounts-for=/mnt/mastodon-data 0 0",
        "# END mastodon-data",
    ]
    assert sh(["grep", "-c", "mastodon-data", "/etc/fstab"], check=False) == "0"  # the machine's

    # Again: nothing to do.
    assert volume_step(1, device, tmp_path, secrets)["changed"] == []

    # Grown (as the stand-in grows a volume): the filesystem follows, online, data kept.
    on_host(1, "echo canary > /var/lib/postgresql/canary")
    sh(["truncate", "-s", str(512 * MIB), str(backing)])
    sh(["losetup", "-c", device])
    grown = volume_step(1, device, tmp_path, secrets)
    # Online where the kernel allows it; this sandbox withholds CAP_SYS_RESOURCE, so offline.
    assert grown["changed"] == [
        "filesystem grown from 0.25 GiB to 0.50 GiB (offline: PostgreSQL stopped for it)"
    ]
    assert grown["size_bytes"] == 512 * MIB
    assert on_host(1, "cat /var/lib/postgresql/canary") == "canary"

    # As after a reboot without the fstab: the existing filesystem is mounted again, not made.
    on_host(1, "umount /var/lib/postgresql /etc/postgresql /mnt/mastodon-data")
    again = volume_step(1, device, tmp_path, secrets)
    assert again["changed"] == [
        "mounted at /mnt/mastodon-data",
        "/etc/postgresql bound from the volume",
        "/var/lib/postgresql bound from the volume",
    ]
    assert on_host(1, "cat /var/lib/postgresql/canary") == "canary"


def test_other_filesystems_and_foreign_data_are_refused(lab, loops, tmp_path):
    secrets = new_secrets(lab)
    swap, _ = loops("swap", 64 * MIB)
    sh(["mkswap", swap])
    with pytest.raises(StepFailed) as caught:
        volume_step(2, swap, tmp_path, secrets)
    assert str(caught.value) == (
        f"volume-mlv-h2 failed: {swap} holds a filesystem of type swap; refusing to format or "
        "mount it (only a blank device or this program's ext4 is used). Give the stack a blank "
        "volume, or wipe this one yourself if its contents are not needed"
    )
    assert sh(["blkid", "-p", "-o", "value", "-s", "TYPE", swap]) == "swap"  # untouched

    foreign, backing = loops("foreign", 64 * MIB)
    sh(["mkfs.ext4", "-q", foreign])
    sh(["debugfs", "-w", "-R", "mkdir photos", foreign])
    with pytest.raises(StepFailed) as caught:
        volume_step(2, foreign, tmp_path, secrets)
    assert str(caught.value) == (
        "volume-mlv-h2 failed: the ext4 on the device holds files this program did not make "
        "(photos); refusing to use it. Give the stack a blank volume, or move those files away "
        "yourself"
    )
    assert mounts_on(2) == []  # not left mounted

    unnamed, backing = loops("unnamed", 64 * MIB)
    with open(backing, "r+b") as handle:
        handle.write(b"\x5a" * 4096)
    with pytest.raises(StepFailed, match="holds data blkid cannot name"):
        volume_step(2, unnamed, tmp_path, secrets)
    assert sh(["blkid", "-p", unnamed], check=False) == ""  # still not formatted


def test_postgresql_files_on_the_root_disk_are_never_hidden(lab, loops, tmp_path):
    secrets = new_secrets(lab)
    on_host(
        3,
        "mkdir -p /var/lib/postgresql/15/main && echo 15 > /var/lib/postgresql/15/main/PG_VERSION",
    )
    device, _ = loops("new", 64 * MIB)
    with pytest.raises(StepFailed) as caught:
        volume_step(3, device, tmp_path, secrets)
    assert str(caught.value) == (
        "volume-mlv-h3 failed: /var/lib/postgresql already holds PostgreSQL files on this "
        "server's own disk; mounting the data volume over them would hide them. Move them onto "
        "the volume first (see docs/operators/volumes.md, 'PostgreSQL files on the root disk'), "
        "then run pulumi up again"
    )
    assert sh(["blkid", "-p", device], check=False) == ""  # nothing formatted
    assert mounts_on(3) == []
    assert on_host(3, "cat /var/lib/postgresql/15/main/PG_VERSION") == "15"

    # The docs' way onto the volume, then the step mounts the moved files.
    page = (Path(__file__).resolve().parents[2] / "docs/operators/volumes.md").read_text()
    block = page.split("# on the droplet, as root\n", 1)[1].split("# then, where pulumi", 1)[0]
    commands = [line for line in block.splitlines() if not line.startswith(("DEV=", "BACKUP="))]
    backup = tmp_path / "root-disk"
    script = f"DEV={device}; BACKUP={backup}\n" + "\n".join(commands)
    on_host(3, f"set -e\n{script}")
    moved = volume_step(3, device, tmp_path, secrets)
    assert moved["changed"] == [
        "mounted at /mnt/mastodon-data",
        "/etc/postgresql bound from the volume",
        "/var/lib/postgresql bound from the volume",
        "fstab entries written",
    ]
    assert on_host(3, "cat /var/lib/postgresql/15/main/PG_VERSION") == "15"
    assert (backup / "lib" / "15" / "main" / "PG_VERSION").read_text() == "15\n"


def test_a_hosts_stack_runs_postgresql_from_each_hosts_data_device(lab, loops, tmp_path):
    reason = engine_gap()
    if reason:
        pytest.skip(reason)
    devices = [loops(f"host{i}", 256 * MIB)[0] for i in (4, 5)]
    config = lab_hosts.stack_config(LAB, 1, 5)
    config["hosts"] = config["hosts"][3:]  # h4 the primary, h5 its replica
    config["postgresAllowedSources"] = [f"{LAB.operator_address}/32"] + [
        f"{LAB.host(i).address}/32" for i in (4, 5)
    ]
    for entry, device in zip(config["hosts"], devices, strict=True):
        entry["dataDevice"] = device
    stack = LabStack("voltest", tmp_path / "stack")
    stack.prepare()
    secrets = new_secrets(lab)
    outputs = applied(stack, config, secrets)
    steps = outputs["steps"]
    for index, device in zip((4, 5), devices, strict=True):
        name = LAB.host(index).name
        assert steps[f"volume-{name}"]["changed"][:2] == [
            "formatted ext4",
            "mounted at /mnt/mastodon-data",
        ]
        # The topmost mount of each (over the lab host's own directories) is the device's.
        data = on_host(index, "findmnt -n -o SOURCE -T /var/lib/postgresql/15/main | tail -1")
        assert data == f"{device}[/lib]"
        config_dir = on_host(index, "findmnt -n -o SOURCE -T /etc/postgresql/15/main | tail -1")
        assert config_dir == f"{device}[/etc]"
    primary, replica = (outputs["replication"][LAB.host(i).name] for i in (4, 5))
    assert replica["receiver"][0]["status"] == "streaming"
    assert replica["system_identifier"] == primary["system_identifier"]
    stack.up()
    assert stack.last_changes() == {"same": 13}  # again: nothing runs (2 pooler, 2 health steps)

    # What the boot unit runs under systemd (the lab has none: systemctl is a stand-in that
    # says what it was asked): the cluster on the volume, started.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text('#!/bin/sh\necho "systemctl $*"\n')
    (fake / "systemctl").chmod(0o755)
    started = on_host(4, f"PATH={fake}:$PATH sh -c {shlex.quote(volume.START_AUTO_CLUSTERS)}")
    assert started == "systemctl start --no-block postgresql@15-main.service"
    on_host(4, "echo manual > /etc/postgresql/15/main/start.conf")
    assert on_host(4, f"PATH={fake}:$PATH sh -c {shlex.quote(volume.START_AUTO_CLUSTERS)}") == ""
