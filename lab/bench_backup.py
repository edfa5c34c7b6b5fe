#!/usr/bin/env python3
"""Benchmark of the backups (issue 14) on a backup lab of its own (mlkb, two hosts) with the
lab's object store (moto behind stunnel, lab/s3.py), in one run:

- at ~1 GB (`pgbench -i -s 70` on the primary): a plain `pg_basebackup -X stream -c fast` on the
  primary (the floor); a pgBackRest full backup to the S3 store (`mastodon-data backups now`, as
  an operator runs it) and to a local posix repository on the same host (so the lab store's
  share is visible); their restores (the S3 one through `mastodon-data restore` onto the second
  host, the posix one into a scratch directory on the primary); time, MB/s of the database size
  and the ratio to the floor of each;
- WAL archive lag (pg_stat_archiver, every 0.5 s) under a pgbench write load: bytes not yet in
  the repository and the age of the last archived file, p50/p99/max, and the time the archive
  takes to catch up once the load stops.

Prints the figures and writes them to results/backup_timings.json (ignored). Root; about ten
minutes. The lab and the store are removed at the end, also on failure.

    venv/bin/python -m lab.bench_backup [--scale S] [--load-seconds N]
"""

from __future__ import annotations

import argparse
import ast
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab import namespaces as lab_hosts
from lab.bench_run import write_figures
from lab.s3 import LabS3
from lab.stack import ROOT, LabStack

# A lab, store and ports of its own: never those of tests/lab/test_backups.py (mlk, 19000-19001).
LAB = lab_hosts.Lab(
    prefix="mlkb", subnet="10.235.0.0/24", state_dir=Path("/var/lib/mastodon-lab-backup-bench")
)
S3_DIR = Path("/var/lib/mastodon-lab-backup-bench-s3")
S3_PORTS = (19010, 19011)  # moto, TLS
BUCKET = "mlkb-bench-backups"
PGBIN = "/usr/lib/postgresql/15/bin"
DB = "mastodon_production"
PSQL = f"cd /tmp && runuser -u postgres -- {PGBIN}/psql -X -A -t -d {DB}"
COMMAND = str(Path(sys.executable).parent / "mastodon-data")
SSH_TIMEOUT = 1800  # seconds for one command on a host (pgbench -i and backups get more)
CATCH_UP_LIMIT = 300  # seconds the archive may take to catch up after the load
TIMED = """set -e
s=$(date +%s.%N)
{command}
e=$(date +%s.%N)
echo "$s $e"
"""
FLOOR = "runuser -u postgres -- {pgbin}/pg_basebackup -D {dir} -X stream -c fast"
POSIX_CONF = "/etc/pgbackrest/bench-posix.conf"
# The same configuration with a local repository in place of the S3 one (same cipher).
POSIX_REPO = "/var/lib/pgbackrest/bench-repo"
POSIX_SETUP = f"""set -e
mkdir -p {POSIX_REPO} && chown postgres: {POSIX_REPO}
grep -v '^repo1-s3-\\|^repo1-type\\|^repo1-path\\|^repo1-storage' /etc/pgbackrest/pgbackrest.conf \\
  | sed 's|^\\[global\\]$|[global]\\nrepo1-type=posix\\nrepo1-path={POSIX_REPO}|' > {POSIX_CONF}
chown root:postgres {POSIX_CONF} && chmod 640 {POSIX_CONF}
runuser -u postgres -- pgbackrest --config={POSIX_CONF} --stanza=mastodon stanza-create
"""
# The archive goes to the S3 repository only: the posix backup does not wait for its WAL there.
POSIX_BACKUP = (
    f"runuser -u postgres -- pgbackrest --config={POSIX_CONF} --stanza=mastodon "
    "--archive-check=n --type=full backup"
)
POSIX_RESTORE = (
    "d=/var/lib/postgresql/bench-restore; rm -rf $d; install -d -o postgres -m 700 $d; "
    f"runuser -u postgres -- pgbackrest --config={POSIX_CONF} --stanza=mastodon "
    "--pg1-path=$d --archive-mode=off --type=immediate restore"
)


def archive_query() -> str:
    """ARCHIVE_QUERY of host/repository.py (what the status step reports), read from its source."""
    tree = ast.parse((ROOT / "mastodon_data" / "host" / "repository.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "ARCHIVE_QUERY":
            return ast.literal_eval(node.value)
    raise RuntimeError("host/repository.py has no ARCHIVE_QUERY")


def ssh(index: int, command: str) -> str:
    argv = LAB.ssh_command(LAB.host(index).address, command)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=SSH_TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{command[:80]!r} on h{index}: {result.stderr.strip()[-800:]}")
    return result.stdout.strip()


def timed(index: int, command: str) -> float:
    start, end = ssh(index, TIMED.format(command=command)).splitlines()[-1].split()
    return round(float(end) - float(start), 2)


def tool(stack: LabStack, *args: str) -> dict:
    result = subprocess.run(
        [COMMAND, args[0], "--stack", stack.name, "--cwd", str(stack.workdir), *args[1:]],
        capture_output=True, text=True, timeout=SSH_TIMEOUT, env=stack.env(),
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"mastodon-data {' '.join(args)}: {result.stderr[-800:]}")
    return json.loads(result.stdout)


def make_stack(store: LabS3, workdir: Path) -> LabStack:
    stack = LabStack("bench-backups", workdir / "stack")
    stack.prepare()
    config = {
        **lab_hosts.stack_config(LAB, 0, 2),
        "backups": True,
        "backupBucket": BUCKET,
        "backupEndpoint": store.endpoint,
        "backupAccessKeyId": "mlkb-bench-key",
        "backupCaCert": store.ca_cert.read_text(),
    }
    stack_secrets = {
        "sshPrivateKey": LAB.private_key.read_text(),
        "replicationPassword": secrets.token_urlsafe(24),
        "dbPassword": secrets.token_urlsafe(24),
        "backupCipherPassphrase": secrets.token_urlsafe(32),
        "backupSecretAccessKey": secrets.token_urlsafe(30),
    }
    stack.configure(config, stack_secrets)
    stack.up()
    return stack


def backups_and_restores(stack: LabStack, scale: int) -> dict:
    start = time.monotonic()
    ssh(
        1, f"cd /tmp && runuser -u postgres -- {PGBIN}/pgbench -i -q -s {scale} mastodon_production"
    )
    figures = {"pgbench_init_s": round(time.monotonic() - start, 1)}
    size = int(ssh(1, f"{PSQL} -c 'SELECT pg_database_size(current_database())'"))
    cluster = int(ssh(1, f"{PSQL} -c 'SELECT sum(pg_database_size(oid)) FROM pg_database'"))
    figures |= {"database_mb": round(size / 2**20), "cluster_mb": round(cluster / 2**20)}
    floor_dir = "/var/lib/postgresql/bench-floor"
    figures["pg_basebackup_s"] = timed(1, FLOOR.format(pgbin=PGBIN, dir=floor_dir))
    ssh(1, f"rm -rf {floor_dir}")
    figures["pgbackrest_s3_backup_s"] = tool(stack, "backups", "now", "--type", "full")["seconds"]
    ssh(1, POSIX_SETUP)
    figures["pgbackrest_posix_backup_s"] = timed(1, POSIX_BACKUP)
    figures["pgbackrest_posix_restore_s"] = timed(1, POSIX_RESTORE)
    ssh(1, f"rm -rf /var/lib/postgresql/bench-restore {POSIX_REPO}")
    restored = tool(stack, "restore", "--host", LAB.host(2).name)
    figures["pgbackrest_s3_restore_s"] = restored["restore_s"]
    figures["s3_restore_recovery_s"] = restored["recovery_s"]
    floor = figures["pg_basebackup_s"]
    for name in ("pg_basebackup", "pgbackrest_s3_backup", "pgbackrest_posix_backup",
                 "pgbackrest_s3_restore", "pgbackrest_posix_restore"):  # fmt: skip
        seconds = figures[f"{name}_s"]
        figures[f"{name}_mb_per_s"] = round(cluster / 2**20 / seconds, 1)
        figures[f"{name}_vs_pg_basebackup"] = round(seconds / floor, 2)
    return figures


def archive_lag(seconds: int) -> dict:
    """Samples the archiver every 0.5 s while pgbench writes for `seconds` s, then until the
    archive has caught up (no complete WAL file left behind)."""
    query = " ".join(archive_query().split())
    samples = int(seconds / 0.5)
    loop = (
        f"for i in $(seq {samples}); do {PSQL} -F ' ' -c \"SELECT lag_bytes, lag_seconds "
        f'FROM ({query}) q"; sleep 0.5; done'
    )
    load = subprocess.Popen(
        LAB.ssh_command(LAB.host(1).address,
                        f"cd /tmp && runuser -u postgres -- {PGBIN}/pgbench -n -c 4 -j 2 "
                        f"-T {seconds} mastodon_production"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines = ssh(1, loop).splitlines()
    out, _ = load.communicate(timeout=seconds + 120)
    tps = next((ln.split("=")[1].split()[0] for ln in out.splitlines() if "tps =" in ln), "?")
    start = time.monotonic()
    while time.monotonic() - start < CATCH_UP_LIMIT:
        lag = int(ssh(1, f'{PSQL} -c "SELECT lag_bytes FROM ({query}) q"'))
        if lag < 16 * 2**20:  # only the current, incomplete file is left
            break
        time.sleep(0.5)
    bytes_, ages = [], []
    for line in lines:
        lag_bytes, lag_seconds = line.split()
        bytes_.append(int(lag_bytes))
        ages.append(float(lag_seconds))
    return {
        "load_tps": tps,
        "archive_lag_mb_p50": round(statistics.median(bytes_) / 2**20, 1),
        "archive_lag_mb_p99": round(percentile(bytes_, 0.99) / 2**20, 1),
        "archive_lag_mb_max": round(max(bytes_) / 2**20, 1),
        "archive_lag_s_p50": round(statistics.median(ages), 2),
        "archive_lag_s_max": round(max(ages), 2),
        "archive_catch_up_after_load_s": round(time.monotonic() - start, 1),
    }


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=70)
    parser.add_argument("--load-seconds", type=int, default=30)
    args = parser.parse_args(argv)
    store = LabS3(LAB.operator_address, S3_DIR, *S3_PORTS)
    lab_hosts.down(LAB)
    try:
        lab_hosts.up(LAB, 2)
        store.start()
        store.make_bucket(BUCKET)
        with tempfile.TemporaryDirectory(prefix="mlkb-bench-") as workdir:
            stack = make_stack(store, Path(workdir))
            figures = backups_and_restores(stack, args.scale)
            figures |= archive_lag(args.load_seconds)
    finally:
        store.stop()
        lab_hosts.down(LAB)
    write_figures(ROOT / "results" / "backup_timings.json", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
