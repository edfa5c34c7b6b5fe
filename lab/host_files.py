"""A lab host's own files: the directories and files bound over the machine's in the host's
mount namespace (PostgreSQL's, PgBouncer's, pgBackRest's, Valkey's, HAProxy's, systemd's units,
fstab and the volumes' device links), and its sshd's configuration and host key. Both labs'
hosts (lab/namespaces.py and the stand-in's, lab/standin/lab_machines.py) are made of them.
Stdlib only."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from lab.system import run

# Directories each host owns privately, with the owner and mode Debian gives them.
PRIVATE_DIRS = {
    "/etc/postgresql": ("postgres", "postgres", 0o755),
    "/var/lib/postgresql": ("postgres", "postgres", 0o755),
    "/var/run/postgresql": ("postgres", "postgres", 0o2775),
    "/var/log/postgresql": ("root", "postgres", 0o1775),
    # pgBackRest's configuration, log, spool and lock files, and the backup timers' units
    "/etc/pgbackrest": ("root", "postgres", 0o750),
    "/var/log/pgbackrest": ("postgres", "postgres", 0o750),
    "/var/spool/pgbackrest": ("postgres", "postgres", 0o750),
    "/var/lib/pgbackrest": ("postgres", "postgres", 0o750),
    "/etc/systemd/system": ("root", "root", 0o755),
    "/etc/pgbouncer": ("root", "root", 0o755),  # PgBouncer's configuration (host/pooler.py)
    "/opt/mastodon-data": ("root", "root", 0o755),  # the health endpoint (replica_health.py)
    "/etc/mastodon-data": ("root", "root", 0o755),  # the exporters' (host/exporters.py)
    # The exporters' upstream builds, as a fresh droplet has them: the copies the program ships
    # (monitoring/builds.py STAGING_DIR) and where the exporters step installs them.
    "/var/lib/mastodon-data": ("root", "root", 0o755),
    "/usr/local/bin": ("root", "root", 0o755),
    # node_exporter's textfile directory: the host's own backup metrics (backup_metrics.py)
    "/var/lib/prometheus/node-exporter": ("root", "root", 0o755),
    "/var/lib/valkey": ("valkey", "valkey", 0o750),  # a managed Valkey node's (lab_valkey.py)
    "/etc/haproxy": ("root", "root", 0o755),  # a load balancer's (lab_load_balancers.py)
}

# And privately too: the host's fstab (the volume step writes its lines there) and the directory
# its attached volumes appear in, as udev makes it. A bind needs a target: the directory is made
# on this machine when missing (empty; nothing of the lab ever lands in it).
PRIVATE_FILES = {"/etc/fstab": "# <file system> <mount point> <type> <options> <dump> <pass>\n"}
DEVICE_LINKS = "/dev/disk/by-id"


def private_source(home: Path, path: str) -> Path:
    """Where a host keeps its own copy of `path` (in its state directory `home`)."""
    return home / path.strip("/").replace("/", "-")


def make_private(home: Path) -> str:
    """Makes the host's private directories and files in `home`; returns the shell commands
    that bind them over the shared ones (in the host's own mount namespace)."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path, (owner, group, mode) in PRIVATE_DIRS.items():
        src = private_source(home, path)
        src.mkdir(exist_ok=True)
        shutil.chown(src, owner, group)
        os.chmod(src, mode)
    for path, text in PRIVATE_FILES.items():
        src = private_source(home, path)
        if not src.exists():
            src.write_text(text)
            os.chmod(src, 0o644)
    private_source(home, DEVICE_LINKS).mkdir(mode=0o755, exist_ok=True)
    # A bind needs a target: one missing on this machine (/etc/pgbackrest: Debian's package does
    # not make it) is made empty here; the host's own directory is mounted over it.
    for path in (*PRIVATE_DIRS, DEVICE_LINKS):
        Path(path).mkdir(mode=0o755, parents=True, exist_ok=True)
    paths = [*PRIVATE_DIRS, *PRIVATE_FILES, DEVICE_LINKS]
    return " && ".join(f"mount --bind {private_source(home, p)} {p}" for p in paths)


def enter_image(home: Path, image: Path) -> str:
    """Shell commands, for the host's fresh private mount namespace (before the binds of
    make_private), that make `image` its root: the image read-only and shared by every host
    that runs it, under an overlay whose writable layer is this host's own (`home`/upper); its
    own /proc, /sys (its network namespace's), /run and /dev/shm, the machine's devices (the
    volumes' loop devices); `home` at the same path (the binds' sources, sshd's files), then
    pivot_root so that the machine's tree is gone (and `nsenter -m` lands in the image)."""
    root, upper, work = home / "root", home / "upper", home / "work"
    for directory in (root, upper, work):
        directory.mkdir(mode=0o755, exist_ok=True)
    targets = " ".join(shlex.quote(p) for p in (*PRIVATE_DIRS, DEVICE_LINKS))
    return " && ".join(
        [
            f"mount -t overlay overlay -o lowerdir={image},upperdir={upper},workdir={work} {root}",
            f"mount -t proc proc {root}/proc",
            f"mount -t sysfs sysfs {root}/sys",
            f"mount --rbind /dev {root}/dev",
            f"mount -t tmpfs -o mode=1777,nosuid,nodev shm {root}/dev/shm",
            f"mount -t tmpfs -o mode=755,nosuid,nodev run {root}/run",
            f"mkdir -p {root}{home}",
            f"mount --bind {home} {root}{home}",
            f"cd {root}",
            "mkdir -p .oldroot",
            "pivot_root . .oldroot",
            "umount -l /.oldroot",
            "rmdir /.oldroot",
            "cd /",
            f"mkdir -p {targets}",
        ]
    )


def ensure_key(path: Path, comment: str) -> Path:
    """An ed25519 key pair at `path` (made once, no passphrase): a host key or the operator's."""
    if not path.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path


def sshd_config(listen: str, host_key: Path, pid_file: Path, authorized: str, *extra: str) -> str:
    """A lab host's sshd_config: root by key only, no PAM; `extra` lines for the host's kind."""
    return "\n".join(
        [
            f"ListenAddress {listen}",
            "Port 22",
            f"HostKey {host_key}",
            f"PidFile {pid_file}",
            f"AuthorizedKeysFile {authorized}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            *extra,
            "StrictModes no",
            "Subsystem sftp internal-sftp",
            "MaxStartups 50:30:100",
            "MaxSessions 50",
            "",
        ]
    )
