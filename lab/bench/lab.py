"""The benchmark's lab (mlabb, five hosts), its stack, and commands on its hosts."""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

import psycopg

from lab import namespaces as lab_hosts
from lab.stack import LabStack
from mastodon_data.database import connect, direct_env

LAB = lab_hosts.Lab(
    prefix="mlabb", subnet="10.254.0.0/24", state_dir=Path("/var/lib/mastodon-lab-bench")
)
HOSTS = 5  # h1 the primary, h2-h4 replicas, h5 never in the stack
PGBIN = "/usr/lib/postgresql/15/bin"
DB = "mastodon_production"
UP_TIMEOUT = 900  # seconds for one `pulumi up`
SSH_TIMEOUT = 120  # seconds for one command on a host (pgbench -i and copies get more)
# A host back to what `lab.namespaces up` gives: no cluster, empty private PostgreSQL
# directories. The checks make sure the directories are the host's own (bind mounts), never the
# machine's.
WIPE = """set -e
[ "$(hostname)" = "{name}" ]
for d in /etc/postgresql /var/lib/postgresql /var/log/postgresql; do mountpoint -q "$d"; done
if [ -f /etc/postgresql/15/main/postgresql.conf ]; then pg_dropcluster --stop 15 main; fi
find /etc/postgresql /var/lib/postgresql /var/log/postgresql -mindepth 1 -delete
"""
# Each pgbench (tpcb-like) transaction inserts one pgbench_history row: rows are counted there.
DIGEST = """SELECT count(*) || '|' || md5(coalesce(string_agg(concat_ws(':', tid, bid, aid,
    delta, mtime), ',' ORDER BY mtime, tid, bid, aid, delta), '')) || '|'
    || (SELECT sum(bbalance) FROM pgbench_branches) FROM pgbench_history"""


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says what failed."""


def timed(fn) -> tuple[float, object]:
    start = time.monotonic()
    result = fn()
    return time.monotonic() - start, result


def ssh(index: int, command: str, timeout: float = SSH_TIMEOUT, stdin: str | None = None) -> str:
    argv = LAB.ssh_command(LAB.host(index).address, command)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=stdin)
    if result.returncode != 0:
        raise BenchError(f"{command[:60]!r} on h{index} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def psql(index: int, sql: str, timeout: float = SSH_TIMEOUT) -> str:
    """SQL as the postgres superuser on host `index` (on stdin, so no quoting)."""
    argv = f"runuser -u postgres -- {PGBIN}/psql -X -q -A -t -v ON_ERROR_STOP=1 -d {DB}"
    return ssh(index, argv, timeout, stdin=sql)


def wipe(index: int) -> None:
    ssh(index, "bash -s", stdin=WIPE.format(name=LAB.host(index).name))


def digest(index: int) -> tuple[int, str]:
    count, rest = psql(index, DIGEST).split("|", 1)
    return int(count), rest


class Bench:
    """The bench lab's stack: `up` with a replica count, and what its outputs say."""

    def __init__(self, workdir: Path):
        self.workdir, self.stack, self.up_started = workdir, None, 0.0
        self.secrets: dict[str, str] = {}
        self.config: dict = {}
        self.outputs: dict = {}

    def fresh(self) -> float:
        """A new lab (fresh hosts, new host keys) and a new stack on it; seconds of the lab."""
        lab_hosts.down(LAB)
        took, _ = timed(lambda: lab_hosts.up(LAB, HOSTS))
        self.secrets = {
            "sshPrivateKey": LAB.private_key.read_text(),
            "replicationPassword": secrets.token_urlsafe(24),
            "dbPassword": secrets.token_urlsafe(24),
        }
        self.stack = LabStack("bench", self.workdir / f"stack-{time.monotonic_ns()}", UP_TIMEOUT)
        self.stack.prepare()
        return took

    def up(self, replicas: int) -> float:
        """Seconds of `pulumi up` alone with `replicas` replicas (configured before)."""
        # The app's network (postgresAllowedSources) stays the same whatever the replica count,
        # as an operator's does: h1-h4 and the operator.
        self.config = lab_hosts.stack_config(LAB, replicas, HOSTS, sources_for=HOSTS - 1)
        self.stack.configure(self.config, self.secrets)
        self.up_started = time.monotonic()
        took, _ = timed(self.stack.up)
        self.outputs = self.stack.outputs()
        return took

    def connect(self, index: int) -> psycopg.Connection:
        """As the app role (pg_monitor), the way the replication check connects."""
        return connect(direct_env(self.outputs), LAB.host(index).address)

    def replica_hosts(self) -> list[int]:
        names = {LAB.host(i).name: i for i in range(1, HOSTS + 1)}
        return [names[r["name"]] for r in self.outputs["replicas"]]

    def changed(self, replica: int) -> list[str]:
        """What the last run of a replica's step reported it changed."""
        reports = self.stack.step_reports()
        return reports[f"replica-{LAB.host(replica).name}"].get("changed", [])

    def reset(self) -> None:
        """Back to the primary alone (its slots dropped), the other hosts wiped, a checkpoint
        so that every timed copy starts from the same state."""
        self.up(0)
        for index in range(2, HOSTS):
            wipe(index)
        psql(1, "CHECKPOINT")
