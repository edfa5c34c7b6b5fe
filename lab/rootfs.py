"""The Debian 13 (trixie) root file system a lab host can run (lab/namespaces.py, `image`), so the
host scripts meet trixie's PostgreSQL 17, PgBouncer and pgBackRest as a Debian 13 droplet would.

Built once with mmdebstrap from Debian's archive into ~/.cache/mastodon-data/rootfs/<suite>-<hash>
(outside the clone, like the engine; $MDATA_ROOTFS_HOME elsewhere), the hash covering the suite,
the package list, the postgres ids and the hooks: change any and the next build makes a new one.
Stdlib only (`python3 -m lab.namespaces down` works without the venv).

    python3 -m lab.rootfs build   # prints the directory; seconds when it is built already
    python3 -m lab.rootfs path    # the directory it would be, built or not
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

SUITE = "trixie"
MIRROR = os.environ.get("MDATA_ROOTFS_MIRROR", "http://deb.debian.org/debian")
# What the host scripts (mastodon_data/host/*.py) and the lab's boot run on a host, installed in
# the image: a lab host has no apt (nothing beyond the trixie suite is reachable anyway).
PACKAGES = (
    "postgresql-17",
    "pgbouncer",
    "pgbackrest",
    "openssh-server",
    "python3",
    "python3-prometheus-client",  # host/backup_metrics.py
    "prometheus-postgres-exporter",
    "prometheus-node-exporter",
    "ca-certificates",
    "openssl",  # host/tls.py
    "iproute2",
    "procps",
    "mount",  # util-linux's mount, umount (host/volume.py)
    "e2fsprogs",  # mkfs.ext4, resize2fs, e2fsck, dumpe2fs (host/volume.py)
    "adduser",  # host/authorized_keys.py
)
BUILD_TIMEOUT = 1800  # seconds; a build here takes well under a minute (docs/developers/lab.md)
COMPLETE = ".mdata-complete"  # written last: a directory without it is an interrupted build


def essential_hook(uid: int, gid: int) -> str:
    """Makes the postgres user with this machine's ids before any package does (trixie would
    give it 100:103, bookworm here 101:104): a host's own directories, made and owned on this
    machine (lab/host_files.py), then belong to the image's postgres too. Written directly: the
    essential set has no useradd; postgresql-common's `adduser --system` keeps an existing user."""
    return (
        f"echo 'postgres:x:{gid}:' >> \"$1/etc/group\" && "
        f"echo 'postgres:x:{uid}:{gid}:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash'"
        ' >> "$1/etc/passwd"'
    )


# What packages make at install time that each host makes for itself: the default cluster
# (the steps create theirs) and the ssh host keys (each host has its own, lab/host_files.py).
CUSTOMIZE_HOOK = (
    'chroot "$1" pg_dropcluster 17 main && rm -f "$1"/etc/ssh/ssh_host_* && '
    'rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages'
)


def postgres_ids() -> tuple[int, int]:
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def cache_home() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mastodon-data"
    return Path(os.environ.get("MDATA_ROOTFS_HOME", default / "rootfs"))


def image_dir(suite: str = SUITE) -> Path:
    """Where the image of this recipe lives (built or not)."""
    recipe = "\n".join([suite, MIRROR, *PACKAGES, essential_hook(*postgres_ids()), CUSTOMIZE_HOOK])
    return cache_home() / f"{suite}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def built(path: Path) -> bool:
    return (path / COMPLETE).exists()


def mmdebstrap_argv(suite: str, target: Path) -> list[str]:
    return [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        "--quiet",
        f"--include={','.join(PACKAGES)}",
        f"--essential-hook={essential_hook(*postgres_ids())}",
        f"--customize-hook={CUSTOMIZE_HOOK}",
        suite,
        str(target),
        f"deb {MIRROR} {suite} main",
    ]


def build(suite: str = SUITE) -> Path:
    """The image, built when missing (one build at a time: a lock in the cache)."""
    path = image_dir(suite)
    if built(path):
        return path
    if not shutil.which("mmdebstrap"):
        raise SystemExit("rootfs: mmdebstrap is missing: run `make packages` (as root)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if built(path):  # another build finished meanwhile
            return path
        partial = path.with_name(path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        started = time.monotonic()
        argv = mmdebstrap_argv(suite, partial)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise SystemExit(f"rootfs: mmdebstrap failed: {result.stderr.strip()[-2000:]}")
        shutil.rmtree(path, ignore_errors=True)
        partial.rename(path)
        (path / COMPLETE).write_text(f"built in {time.monotonic() - started:.0f} s\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("build", "path"))
    args = parser.parse_args(argv)
    if args.action == "path":
        print(image_dir())
        return 0
    if os.geteuid() != 0:
        raise SystemExit("rootfs: building needs root (mmdebstrap's root mode): run it with sudo")
    started = time.monotonic()
    path = build()
    print(f"rootfs: {path} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
