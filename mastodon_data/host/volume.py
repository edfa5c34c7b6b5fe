#!/usr/bin/env python3
"""PostgreSQL's files on a data device (a DigitalOcean Volume, or a host's `dataDevice`).

The device is formatted only when it is blank (no signature `blkid -p` knows and a zeroed
start), never when it holds anything: another filesystem, a partition table, or an ext4 that is
not ours is refused. It is mounted by its stable path at MOUNT_POINT, and its two directories are
bound where Debian's postgresql-common expects them: `etc` at /etc/postgresql (configuration,
certificates, the CA) and `lib` at /var/lib/postgresql (the data, postgres's home). So a new
droplet that gets the volume finds the whole cluster as it was, with the paths unchanged.
The fstab lines (`nofail`) bring it back after a reboot; a grown device grows the filesystem
(online where the kernel allows it, else with PostgreSQL stopped for it). Existing data on the
root disk is never hidden: the step refuses and says how to move it. Idempotent.

stdin (JSON): VolumeParams (mastodon_data/host_params.py). The device's size is read here; the
program's (dataVolumeSize) only runs the step again when it changes.
"""

from __future__ import annotations

import os
import pwd
import stat
import time
from pathlib import Path

from common import (
    HostError,
    log,
    main_wrapper,
    read_params,
    replace_managed_block,
    run,
    systemd_running,
    write_if_changed,
)

MOUNT_POINT = Path("/mnt/mastodon-data")
LABEL = "pgdata"  # ext4 label (16 bytes at most)
MARKER = ".mastodon-data"  # on the volume's root: this layout is ours
# Volume directory -> where postgresql-common expects it (owner postgres, 0755).
BINDS = {"etc": Path("/etc/postgresql"), "lib": Path("/var/lib/postgresql")}
FSTAB = Path("/etc/fstab")
OPTIONS = "defaults,nofail,discard,noatime"  # DigitalOcean's recommended volume options
DEVICE_WAIT = 60  # seconds an attached volume may take to appear
ZERO_PROBE = 1 << 20  # bytes at the start of a "blank" device that must be zero
# systemd: postgresql-common's generator lists the clusters in /etc/postgresql before the fstab
# mounts, so at boot it sees none on the volume. This unit starts the `auto` clusters once the
# volume and its binds are mounted (postgresql@.service itself waits for them). In ExecStart,
# systemd would expand $v: each $ is written $$.
BOOT_UNIT = Path("/etc/systemd/system/mastodon-data-clusters.service")
START_AUTO_CLUSTERS = (
    "pg_lsclusters -h | while read v c rest; do "
    'grep -qsx auto "/etc/postgresql/$v/$c/start.conf" && '
    'systemctl start --no-block "postgresql@$v-$c.service"; done; true'
)
BOOT_UNIT_TEXT = f"""[Unit]
Description=PostgreSQL clusters on the data volume (mastodon-data)
RequiresMountsFor=/etc/postgresql /var/lib/postgresql
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c '{START_AUTO_CLUSTERS.replace("$", "$$")}'

[Install]
WantedBy=multi-user.target
"""
CAP_SYS_RESOURCE = 24  # linux/capability.h
MIGRATE_HINT = "see docs/operators/volumes.md, 'PostgreSQL files on the root disk'"


def main() -> dict:
    params = read_params()
    device = Path(params["data_device"])
    real = wait_for_device(device)
    changed: list[str] = []
    mounted_now = False
    if not mounted(real, "/", MOUNT_POINT):
        refuse_hidden_data()
        prepare(device, real, changed)
        mount(real, changed)
        mounted_now = True
    check_layout()
    ensure_owner(changed)
    for name, target in BINDS.items():
        bind(MOUNT_POINT / name, target, real, name, changed)
    if write_fstab(device):
        changed.append("fstab entries written")
    if systemd_running() and ensure_boot_unit():
        changed.append(f"{BOOT_UNIT.name} enabled (clusters started after the mounts at boot)")
    grow(real, changed)
    if mounted_now:
        clear_stale_pids()
    for line in changed:
        log(line)
    return {
        "device": str(device),
        "filesystem": "ext4",
        "size_bytes": filesystem_bytes(real),
        "changed": changed,
    }


# --- the device --------------------------------------------------------------------------
def wait_for_device(device: Path) -> Path:
    deadline = time.monotonic() + DEVICE_WAIT
    while not device.exists():
        if time.monotonic() > deadline:
            raise HostError(
                f"{device} did not appear within {DEVICE_WAIT} s: is the volume attached to "
                "this server (doctl compute volume list)?"
            )
        time.sleep(0.2)
    real = device.resolve()
    if not stat.S_ISBLK(os.stat(real).st_mode):
        raise HostError(f"{device} ({real}) is not a block device")
    return real


def signature(real: Path) -> dict[str, str]:
    """What `blkid -p` finds on the device ({} when nothing)."""
    result = run(["blkid", "-p", "-o", "export", str(real)], check=False)
    if result.returncode == 2:  # nothing detected
        return {}
    if result.returncode != 0:
        raise HostError(f"blkid {real} failed: {result.stderr.strip()}")
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def zeroed_start(real: Path) -> bool:
    with open(real, "rb") as handle:
        return not handle.read(ZERO_PROBE).strip(b"\0")


def prepare(device: Path, real: Path, changed: list[str]) -> None:
    """Formats a blank device; accepts ext4; refuses anything else."""
    found = signature(real)
    if not found:
        if not zeroed_start(real):
            raise HostError(
                f"{device} holds data blkid cannot name (its first MiB is not blank); "
                "refusing to format it. Wipe it yourself if it is really unused "
                f"(wipefs -a {device}; dd if=/dev/zero of={device} bs=1M count=1) and run again"
            )
        log(f"formatting the blank {device} as ext4")
        run(["mkfs.ext4", "-q", "-L", LABEL, "-m", "1", str(real)])
        changed.append("formatted ext4")
        return
    kind = found.get("TYPE") or found.get("PTTYPE", "unknown")
    if found.get("TYPE") != "ext4":
        what = "a partition table" if "PTTYPE" in found and "TYPE" not in found else "a filesystem"
        raise HostError(
            f"{device} holds {what} of type {kind}; refusing to format or mount it "
            "(only a blank device or this program's ext4 is used). Give the stack a blank "
            "volume, or wipe this one yourself if its contents are not needed"
        )


def mount(real: Path, changed: list[str]) -> None:
    MOUNT_POINT.mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "ext4", "-o", OPTIONS.replace("nofail,", ""), str(real), str(MOUNT_POINT)])
    changed.append(f"mounted at {MOUNT_POINT}")


def check_layout() -> None:
    """The filesystem holds this program's layout or nothing yet; anything else is foreign."""
    entries = {p.name for p in MOUNT_POINT.iterdir()}
    ours = {MARKER, "lost+found", *BINDS}
    if entries - ours or (entries & set(BINDS) and MARKER not in entries):
        run(["umount", str(MOUNT_POINT)], check=False)
        raise HostError(
            f"the ext4 on the device holds files this program did not make "
            f"({', '.join(sorted(entries - {'lost+found'})[:5])}); refusing to use it. Give the "
            "stack a blank volume, or move those files away yourself"
        )
    (MOUNT_POINT / MARKER).write_text("PostgreSQL of mastodon-data: etc -> /etc/postgresql, "
                                      "lib -> /var/lib/postgresql\n")  # fmt: skip


# --- mounts --------------------------------------------------------------------------------
def mounts() -> list[tuple[str, str, Path]]:
    """(major:minor, root inside the filesystem, mount point) of this namespace's mounts."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        found.append((fields[2], fields[3], Path(fields[4].replace("\\040", " "))))
    return found


def device_number(real: Path) -> str:
    rdev = os.stat(real).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def mounted(real: Path, root: str, point: Path) -> bool:
    """Whether the device's directory `root` is mounted at `point`."""
    number = device_number(real)
    return any(dev == number and r == root and p == point for dev, r, p in mounts())


def holds_files(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def refuse_hidden_data() -> None:
    """The volume is not mounted yet: PostgreSQL files already on the root disk would be hidden
    under it (a server made before volumes). Refuse rather than lose sight of them."""
    full = [str(t) for t in BINDS.values() if holds_files(t)]
    if full:
        raise HostError(
            f"{' and '.join(full)} already {'hold' if len(full) > 1 else 'holds'} PostgreSQL "
            "files on this server's own disk; "
            "mounting the data volume over them would hide them. Move them onto the volume "
            f"first ({MIGRATE_HINT}), then run pulumi up again"
        )


def postgres_ids() -> tuple[int, int]:
    """The postgres user, made as postgresql-common makes it when the package is not in yet."""
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        run(["adduser", "--system", "--quiet", "--home", "/var/lib/postgresql", "--no-create-home",
             "--shell", "/bin/bash", "--group", "--gecos", "PostgreSQL administrator",
             "postgres"])  # fmt: skip
        entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def ensure_owner(changed: list[str]) -> None:
    """Both directories belong to postgres; files from a server whose postgres had other ids
    (a droplet made from another image) are given to this one's."""
    uid, gid = postgres_ids()
    for name in BINDS:
        top = MOUNT_POINT / name
        if not top.exists():
            top.mkdir()
            os.chmod(top, 0o755)  # as Debian has them (the launcher's umask is 077)
            os.chown(top, uid, gid)
            continue
        old = os.stat(top)
        if (old.st_uid, old.st_gid) != (uid, gid):
            reown(top, (old.st_uid, old.st_gid), (uid, gid))
            changed.append(f"{name} given to postgres ({old.st_uid}:{old.st_gid} -> {uid}:{gid})")


def reown(top: Path, old: tuple[int, int], new: tuple[int, int]) -> None:
    for path in [top, *top.rglob("*")]:
        st = os.lstat(path)
        uid = new[0] if st.st_uid == old[0] else -1
        gid = new[1] if st.st_gid == old[1] else -1
        if uid != -1 or gid != -1:
            os.lchown(path, uid, gid)


def bind(source: Path, target: Path, real: Path, name: str, changed: list[str]) -> None:
    if mounted(real, f"/{name}", target):
        return
    if holds_files(target):
        raise HostError(
            f"{target} already holds files on this server's own disk; binding the volume's "
            f"{name} over it would hide them. Move them onto the volume first ({MIGRATE_HINT})"
        )
    target.mkdir(parents=True, exist_ok=True)
    run(["mount", "--bind", str(source), str(target)])
    changed.append(f"{target} bound from the volume")


def fstab_lines(device: Path) -> list[str]:
    after = f"x-systemd.requires-mounts-for={MOUNT_POINT}"
    lines = [f"{device} {MOUNT_POINT} ext4 {OPTIONS} 0 2"]
    lines += [f"{MOUNT_POINT / n} {t} none bind,nofail,{after} 0 0" for n, t in BINDS.items()]
    return lines


def write_fstab(device: Path) -> bool:
    text = FSTAB.read_text() if FSTAB.exists() else ""
    new = replace_managed_block(text, fstab_lines(device))
    if new == text:
        return False
    tmp = FSTAB.with_name(f".fstab.mastodon-data.{os.getpid()}")  # its own: /etc may be shared
    tmp.write_text(new)
    os.chmod(tmp, 0o644)
    try:
        os.replace(tmp, FSTAB)
    except OSError:  # /etc/fstab is itself a mount point (a bind): write it in place
        FSTAB.write_text(new)
        tmp.unlink()
    return True


def ensure_boot_unit() -> bool:
    if not write_if_changed(BOOT_UNIT, BOOT_UNIT_TEXT):
        return False
    run(["systemctl", "daemon-reload"])
    run(["systemctl", "enable", BOOT_UNIT.name])
    return True


# --- growth --------------------------------------------------------------------------------
def device_bytes(real: Path) -> int:
    return int(run(["blockdev", "--getsize64", str(real)]).stdout.strip())


def filesystem_bytes(real: Path) -> int:
    info = {}
    for line in run(["dumpe2fs", "-h", str(real)]).stdout.splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return int(info["Block count"]) * int(info["Block size"])


def grow(real: Path, changed: list[str]) -> None:
    before, size = filesystem_bytes(real), device_bytes(real)
    if size - before < 4 << 20:  # less than a few block groups' worth: nothing to grow
        return
    log(f"growing the filesystem from {gib(before)} to {gib(size)}")
    if can_resize_online():
        run(["resize2fs", str(real)])
        how = "online"
    else:
        grow_offline(real)
        how = "offline: PostgreSQL stopped for it"
    changed.append(f"filesystem grown from {gib(before)} to {gib(filesystem_bytes(real))} ({how})")


def can_resize_online() -> bool:
    """ext4 grows while mounted when the kernel lets this process (CAP_SYS_RESOURCE); a
    container without it (as the lab's sandbox) must grow it unmounted."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


def grow_offline(real: Path) -> None:
    """The clusters that run stopped, the filesystem unmounted, checked, grown and mounted
    again, the clusters started again."""
    online = running_clusters()
    for version, name in online:
        run(["pg_ctlcluster", version, name, "stop", "-m", "fast"])
    try:
        for point in [*reversed(BINDS.values()), MOUNT_POINT]:
            run(["umount", str(point)])
        fsck = run(["e2fsck", "-f", "-p", str(real)], check=False)
        if fsck.returncode not in (0, 1):  # 1: errors corrected
            raise HostError(f"e2fsck {real} found problems it cannot fix: {fsck.stdout.strip()}")
        run(["resize2fs", str(real)])
    finally:  # grown or not, the data is mounted again and the clusters run as before
        if not mounted(real, "/", MOUNT_POINT):
            mount(real, [])
        for name, target in BINDS.items():
            bind(MOUNT_POINT / name, target, real, name, [])
        for version, name in online:
            run(["pg_ctlcluster", version, name, "start"])


def running_clusters() -> list[tuple[str, str]]:
    if not Path("/usr/bin/pg_lsclusters").exists():
        return []
    out = run(["pg_lsclusters", "-h"]).stdout
    rows = [line.split() for line in out.splitlines()]
    return [(f[0], f[1]) for f in rows if f[3].startswith("online")]  # "online,recovery" too


def gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def clear_stale_pids() -> None:
    """Just mounted: no server of this host runs on these files yet, so a postmaster.pid is a
    leftover of the server that ran elsewhere (a replaced droplet's)."""
    for pid_file in (MOUNT_POINT / "lib").glob("*/*/postmaster.pid"):
        log(f"removing {pid_file} left by the server that last used the volume")
        pid_file.unlink()


if __name__ == "__main__":
    main_wrapper(main)
