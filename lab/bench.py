#!/usr/bin/env python3
"""Benchmark of `pulumi up` of a hosts-mode stack through the engine, on a lab of its own (mlabb,
five hosts), in one run (issue 15). Each figure is the median of `--rounds` rounds:

- the first `up` (a primary and two replicas on fresh hosts) and a no-change `up` after it;
- at ~1 GB (`pgbench -i -s 70` on the primary): `pulumi up` adding one replica, a raw
  `pg_basebackup -X stream -c fast` of the same primary on the same host (the floor), and
  `pulumi up` adding three replicas at once, and three raw copies at once (what the machine
  allows);
- lag (p50/p99/max of the primary's pg_stat_replication, every 50 ms) under a pgbench write load,
  and rows lost once every replica has replayed the primary's last position;
- catch-up after a 30 s cut of a replica's link under load: seconds from the link's return until
  the replica has replayed the primary's position of that moment, and rows lost.

Only `pulumi up` itself is timed (the configuration is written before). Prints the figures
against the issue's targets and writes them to results/lab_timings.json (ignored). Root; takes
about ten minutes. The lab is removed at the end, also on failure.

    venv/bin/python -m lab.bench [--rounds N] [--scale S]     # from the project directory
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from math import ceil
from pathlib import Path

import psycopg

from lab import namespaces as lab_hosts
from lab.stack import ROOT, LabStack
from mastodon_data.database import connect, direct_env, lsn

LAB = lab_hosts.Lab(
    prefix="mlabb", subnet="10.254.0.0/24", state_dir=Path("/var/lib/mastodon-lab-bench")
)
HOSTS = 5  # h1 the primary, h2-h4 replicas, h5 never in the stack
PGBIN = "/usr/lib/postgresql/15/bin"
DB = "mastodon_production"
UP_TIMEOUT = 900  # seconds for one `pulumi up`
SSH_TIMEOUT = 120  # seconds for one command on a host (pgbench -i and copies get more)
REPLAY_LIMIT = 120  # seconds every replica may take to replay the primary's last position
CATCH_UP_LIMIT = 60  # seconds a replica may take to catch up after its link returns
SAMPLE_EVERY = 0.05  # seconds between two looks at the primary's pg_stat_replication
CUT_LEAD, CUT_TAIL = 5, 15  # seconds of load before the cut and after the link's return
RATE = 300  # transactions per second of the write loads (see --rate)
WATCHED = ("primary.py", "replica.py", "status.py", "pg_basebackup", "pg_createcluster", "pg_ctl")
# A host back to what `lab.py up` gives: no cluster, empty private PostgreSQL directories. The
# checks make sure the directories are the host's own (bind mounts), never the machine's.
WIPE = """set -e
[ "$(hostname)" = "{name}" ]
for d in /etc/postgresql /var/lib/postgresql /var/log/postgresql; do mountpoint -q "$d"; done
if [ -f /etc/postgresql/15/main/postgresql.conf ]; then pg_dropcluster --stop 15 main; fi
find /etc/postgresql /var/lib/postgresql /var/log/postgresql -mindepth 1 -delete
"""
FLOOR = """set -e
d=/var/lib/postgresql/bench-floor
rm -rf "$d"
s=$(date +%s.%N)
runuser -u postgres -- {pgbin}/pg_basebackup -D "$d" -X stream -c fast -w -d '{conninfo}'
e=$(date +%s.%N)
rm -rf "$d"
echo "$s $e"
"""
# Each pgbench (tpcb-like) transaction inserts one pgbench_history row: rows are counted there.
DIGEST = """SELECT count(*) || '|' || md5(coalesce(string_agg(concat_ws(':', tid, bid, aid,
    delta, mtime), ',' ORDER BY mtime, tid, bid, aid, delta), '')) || '|'
    || (SELECT sum(bbalance) FROM pgbench_branches) FROM pgbench_history"""
LAG_SQL = """SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
    extract(epoch FROM replay_lag)::float FROM pg_stat_replication"""
TARGETS = {  # figure: (what, bound, how the issue words it)
    "add_one_vs_basebackup": ("add one replica vs raw pg_basebackup (1 GB)", 1.5, "<= 1.5x"),
    "three_vs_one": ("add 3 replicas at once vs 1", 1.5, "<= 1.5x"),
    "no_change_vs_first": ("no-change `up` vs the first `up`", 0.15, "<= 0.15x"),
    "catch_up_after_cut_s": ("catch-up after a 30 s link cut (s)", 5.0, "<= 5 s"),
    "rows_lost": ("rows lost (lag load and link cut, all rounds)", 0, "0"),
}


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


def spread(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 (nearest rank) and max."""
    ordered = sorted(values) or [0.0]

    def rank(q: float) -> float:
        return ordered[max(0, ceil(q * len(ordered)) - 1)]

    return rank(0.5), rank(0.99), ordered[-1]


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


class Load:
    """pgbench (tpcb-like) on the primary for `seconds`, at `rate` transactions per second."""

    def __init__(self, seconds: int, rate: int):
        self.seconds = seconds
        command = f"runuser -u postgres -- {PGBIN}/pgbench -n -c 2 -j 2 -T {seconds} -R {rate} {DB}"
        self.process = subprocess.Popen(
            LAB.ssh_command(LAB.host(1).address, command),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def committed(self) -> int:
        try:
            out, err = self.process.communicate(timeout=self.seconds + 60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise BenchError("pgbench did not end in time") from None
        for line in out.splitlines():
            if "number of transactions actually processed" in line:
                return int(line.split(":")[1].split("/")[0])
        raise BenchError(f"pgbench printed no count: {out} {err}")


class LagSampler(threading.Thread):
    """The primary's pg_stat_replication every SAMPLE_EVERY s: bytes behind and, when behind,
    replay_lag (0 when a replica has replayed everything, as status.py reports it)."""

    def __init__(self, conn: psycopg.Connection):
        super().__init__(daemon=True)
        self.conn, self.done = conn, threading.Event()
        self.samples: list[tuple[str, int, float | None]] = []
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            while not self.done.wait(SAMPLE_EVERY):
                for name, behind, lag in self.conn.execute(LAG_SQL).fetchall():
                    behind = max(behind or 0, 0)
                    self.samples.append((name, behind, 0.0 if behind == 0 else lag))
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc

    def figures(self) -> dict:
        self.done.set()
        self.join(timeout=10)
        if self.error or not self.samples:
            raise BenchError(f"lag sampling failed: {self.error or 'no sample'}")
        seconds = [lag for _, _, lag in self.samples if lag is not None]
        p50, p99, top = spread(seconds)
        b50, b99, btop = spread([float(behind) for _, behind, _ in self.samples])
        return {
            "lag_p50_s": p50,
            "lag_p99_s": p99,
            "lag_max_s": top,
            "lag_p50_bytes": b50,
            "lag_p99_bytes": b99,
            "lag_max_bytes": btop,
            "lag_samples": len(self.samples),
        }


def primary_lsn(conn: psycopg.Connection) -> int:
    return lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])


def replayed_after(bench: Bench, index: int, target: int, limit: float, start: float) -> float:
    """Seconds from `start` until replica `index` has replayed `target`, polled every 20 ms
    (connecting again while the host is unreachable)."""
    conn = None
    try:
        while time.monotonic() - start < limit:
            try:
                conn = conn or bench.connect(index)
                row = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
                if lsn(row[0]) >= target:
                    return time.monotonic() - start
            except psycopg.OperationalError:
                conn = None
            time.sleep(0.02)
    finally:
        if conn:
            conn.close()
    raise BenchError(f"h{index} did not replay {target:X} within {limit} s")


def rows_lost(bench: Bench, before: int, committed: int) -> dict:
    """Once every replica has replayed the primary's last position: committed rows missing on
    any host (the primary included), and whether every replica's checksum is the primary's."""
    with bench.connect(1) as conn:
        target, start = primary_lsn(conn), time.monotonic()
    for index in bench.replica_hosts():
        replayed_after(bench, index, target, REPLAY_LIMIT, start)
    expected = digest(1)
    found = [expected] + [digest(i) for i in bench.replica_hosts()]
    return {
        "rows_committed": committed,
        "rows_lost": max(before + committed - count for count, _ in found),
        "checksums_match": all(d == expected for d in found),
    }


def lag_under_load(bench: Bench, seconds: int, rate: int) -> dict:
    before = digest(1)[0]
    with bench.connect(1) as conn:
        sampler = LagSampler(conn)
        sampler.start()
        committed = Load(seconds, rate).committed()
        figures = sampler.figures()
    lost = rows_lost(bench, before, committed)
    return {**figures, **{f"load_{k}": v for k, v in lost.items()}, "load_tps": committed / seconds}


def set_link(index: int, state: str) -> None:
    port = LAB.host(index).switch_port
    lab_hosts.run(["ip", "-n", LAB.switch_ns, "link", "set", port, state])


def link_cut(bench: Bench, cut: int, rate: int) -> dict:
    """The first replica's link into the switch down for `cut` s under load, then back."""
    index, before = bench.replica_hosts()[0], digest(1)[0]
    with bench.connect(1) as conn:
        load = Load(CUT_LEAD + cut + CUT_TAIL, rate)
        time.sleep(CUT_LEAD)
        try:
            set_link(index, "down")
            time.sleep(cut)
        finally:
            set_link(index, "up")
        back = time.monotonic()
        target = primary_lsn(conn)
    catch_up = replayed_after(bench, index, target, CATCH_UP_LIMIT, back)
    committed = load.committed()
    lost = rows_lost(bench, before, committed)
    return {"catch_up_after_cut_s": catch_up, **{f"cut_{k}": v for k, v in lost.items()}}


def raw_basebackup(bench: Bench, index: int) -> float:
    """The floor: a raw copy of the primary onto replica host `index` over the very connection
    the replica step copied through (its primary_conninfo: TLS, its .pgpass), timed on the host,
    then removed."""
    return raw_basebackups(bench, [index])


def raw_basebackups(bench: Bench, indexes: list[int]) -> float:
    """Raw copies onto several replica hosts at once (as raw_basebackup): seconds from the first
    start to the last end (the hosts share this machine's clock)."""
    conninfos = {index: psql(index, "SHOW primary_conninfo") for index in indexes}
    for index, conninfo in conninfos.items():
        if "'" in conninfo or "host=" not in conninfo:
            raise BenchError(f"unexpected primary_conninfo on h{index}: {conninfo!r}")
    psql(1, "CHECKPOINT")

    def copy(index: int) -> list[float]:
        script = FLOOR.format(pgbin=PGBIN, conninfo=conninfos[index])
        return [float(t) for t in ssh(index, "bash -s", 900, stdin=script).split()[-2:]]

    with ThreadPoolExecutor(len(indexes)) as pool:
        spans = list(pool.map(copy, indexes))
    return max(end for _, end in spans) - min(start for start, _ in spans)


def expect_cloned(bench: Bench, replicas: list[int]) -> None:
    for index in replicas:
        if "cloned" not in bench.changed(index):
            raise BenchError(f"h{index} was not cloned: {bench.changed(index)}")


def first_up_round(bench: Bench) -> dict:
    """On fresh hosts: the first `up` (a primary and two replicas), then one that changes
    nothing, and the engine's floor in the same round."""
    lab_s = bench.fresh()
    first = bench.up(2)
    again = bench.up(2)
    changes = bench.stack.last_changes()
    if set(changes) != {"same"}:
        raise BenchError(f"the second `up` changed something: {changes}")
    floor = engine_floor(bench.workdir / f"floor-{time.monotonic_ns()}")
    return {
        "lab_up_s": lab_s,
        "first_up_s": first,
        "no_change_up_s": again,
        "engine_floor_up_s": floor,
    }


def engine_floor(workdir: Path) -> float:
    """Seconds of a no-change `up` of a program that declares nothing, with the same CLI,
    language host, venv and kind of backend: what any `up` costs before the program's work."""
    workdir.mkdir(mode=0o700)
    (workdir / "backend").mkdir()
    runtime = {"name": "python", "options": {"virtualenv": str(ROOT / "venv")}}
    project = {"name": "engine-floor", "runtime": runtime}
    (workdir / "Pulumi.yaml").write_text(json.dumps(project))
    (workdir / "__main__.py").write_text("import pulumi\n\npulumi.export('floor', 1)\n")
    (workdir / "passphrase").write_text(secrets.token_urlsafe(24))
    stack = LabStack("floor", workdir, UP_TIMEOUT)
    stack.pulumi("stack", "init", "floor", "--secrets-provider", "passphrase", stack=False)
    stack.up()
    took, _ = timed(stack.up)
    return took


def load_primary(bench: Bench, scale: int) -> dict:
    """The primary alone, filled by `pgbench -i -s scale` (scale 70: ~1 GB)."""
    bench.reset()
    init = f"runuser -u postgres -- {PGBIN}/pgbench -i -q -s {scale} {DB}"
    took, _ = timed(lambda: ssh(1, init, timeout=1800))
    psql(1, "CHECKPOINT")
    size = int(psql(1, f"SELECT pg_database_size('{DB}')"))
    return {"pgbench_init_s": took, "database_bytes": size}


def data_round(bench: Bench, args: argparse.Namespace) -> dict:
    bench.reset()
    one = bench.up(1)
    expect_cloned(bench, [2])
    floor = raw_basebackup(bench, 2)
    bench.reset()
    three = bench.up(3)
    expect_cloned(bench, [2, 3, 4])
    raw_three = raw_basebackups(bench, [2, 3, 4])
    again = bench.up(3)
    if set(bench.stack.last_changes()) != {"same"}:
        raise BenchError(f"the no-change `up` changed: {bench.stack.last_changes()}")
    return {
        "add_one_replica_s": one,
        "raw_basebackup_s": floor,
        "add_three_replicas_s": three,
        "raw_three_basebackups_s": raw_three,
        "no_change_up_1gb_s": again,
        **lag_under_load(bench, args.load_seconds, args.rate),
        **link_cut(bench, args.cut_seconds, args.rate),
    }


def watched(argv: list[str]) -> str | None:
    """Which step or PostgreSQL tool a process of a host is (None: not one we follow)."""
    if argv[1:2] == ["-c"] and "mastodon-data-" in "".join(argv[2:3]):
        return "launcher"  # ssh session of a step: the scripts written, the script run
    names = [os.path.basename(arg) for arg in argv[:3]]  # perl -w /usr/bin/pg_createcluster
    return next((name for name in names if name in WATCHED), None)


class Observer(threading.Thread):
    """What runs on which bench host when (/proc every 50 ms: processes are in the hosts'
    network namespaces, not in a PID namespace of their own). For the breakdown only."""

    def __init__(self):
        super().__init__(daemon=True)
        self.hosts = {
            f"net:[{os.stat(f'/run/netns/{LAB.host(i).netns}').st_ino}]": LAB.host(i).name
            for i in range(1, HOSTS + 1)
        }
        self.spans: dict[tuple[str, str, str], list[float]] = {}
        self.done = threading.Event()

    def look(self) -> None:
        now = time.monotonic()
        for proc in Path("/proc").iterdir():
            try:
                host = self.hosts.get(os.readlink(proc / "ns" / "net"))
                argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            what = watched(argv) if host else None
            if what:
                self.spans.setdefault((proc.name, host, what), [now, now])[1] = now

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.look()

    def report(self, origin: float) -> list[dict]:
        """Spans in seconds from `origin`; overlapping ones of one kind on one host merged
        (pg_basebackup's WAL streamer, a fork before its exec)."""
        self.done.set()
        self.join(timeout=10)
        merged: list[dict] = []
        for (_, host, what), (a, b) in sorted(self.spans.items(), key=lambda kv: kv[1][0]):
            last = next((m for m in merged if (m["host"], m["what"]) == (host, what)), None)
            if last and a - origin <= last["to_s"]:
                last["to_s"] = max(last["to_s"], round(b - origin, 2))
                continue
            merged.insert(0, {"host": host, "what": what, "from_s": round(a - origin, 2)})
            merged[0]["to_s"] = round(b - origin, 2)
        return sorted(merged, key=lambda span: span["from_s"])


def breakdown(bench: Bench) -> dict:
    """One more `up` adding a replica at 1 GB, observed: where its time goes (outside the
    medians: the observer costs CPU). Spans in seconds from the start of `pulumi up`."""
    bench.reset()
    observer = Observer()
    observer.start()
    took = bench.up(1)
    return {"up_s": took, "spans": observer.report(bench.up_started)}


def aggregate(rounds: list[dict]) -> dict:
    """Medians over rounds; the worst for maxima and rows lost; all() for checks."""
    out = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        if isinstance(values[0], bool):
            out[key] = all(values)
        elif key.endswith("rows_lost") or "_max_" in key:
            out[key] = max(values)
        else:
            out[key] = statistics.median(values)
    return out


def figures_of(result: dict) -> dict:
    figures = {**aggregate(result["first_up_rounds"]), **aggregate(result["rounds"])}
    figures["no_change_vs_first"] = figures["no_change_up_s"] / figures["first_up_s"]
    # Context for the two ratios the engine's own cost bounds: the same ratios without it.
    floor = figures["engine_floor_up_s"]
    figures["no_change_above_floor_s"] = figures["no_change_up_s"] - floor
    figures["add_one_above_floor_vs_basebackup"] = (figures["add_one_replica_s"] - floor) / figures[
        "raw_basebackup_s"
    ]
    figures["add_one_vs_basebackup"] = figures["add_one_replica_s"] / figures["raw_basebackup_s"]
    figures["three_vs_one"] = figures["add_three_replicas_s"] / figures["add_one_replica_s"]
    # What the machine allows: three raw copies at once vs one.
    figures["raw_three_vs_one"] = figures["raw_three_basebackups_s"] / figures["raw_basebackup_s"]
    figures["rows_lost"] = max(figures["load_rows_lost"], figures["cut_rows_lost"])
    figures["checksums_match"] = figures["load_checksums_match"] and figures["cut_checksums_match"]
    return figures


def target_table(figures: dict) -> tuple[str, dict[str, bool]]:
    """The figures against the issue's targets, as a markdown table."""
    lines = ["| what | figure | target | met? |", "|---|---|---|---|"]
    met = {}
    for key, (what, bound, shown) in TARGETS.items():
        value = figures[key]
        met[key] = value <= bound and (key != "rows_lost" or figures["checksums_match"])
        unit = "x" if "<= 1" in shown or "<= 0" in shown else (" s" if "s" in shown else "")
        number = f"{value:.0f}" if key == "rows_lost" else f"{value:.2f}"
        lines.append(f"| {what} | {number}{unit} | {shown} | {'yes' if met[key] else 'no'} |")
    return "\n".join(lines), met


def show(result: dict, table: str) -> None:
    for key, value in result["median"].items():
        print(f"{key:32} {value:14.3f}" if isinstance(value, float) else f"{key:32} {value!s:>14}")
    observed = result["breakdown"]
    print(f"\nan `up` adding one replica ({observed['up_s']:.2f} s), s from its start:")
    for span in observed["spans"]:
        print(f"  {span['host']:9} {span['what']:16} {span['from_s']:6.2f} - {span['to_s']:6.2f}")
    print(f"\n{table}\n\nbenchmark took {result['seconds']:.0f} s")


def run(args: argparse.Namespace, workdir: Path) -> dict:
    bench = Bench(workdir)
    result: dict = {"first_up_rounds": [], "rounds": []}
    for n in range(args.rounds):
        result["first_up_rounds"].append(first_up_round(bench))
        print(f"first up, round {n + 1}: {result['first_up_rounds'][-1]}", flush=True)
    result["setup"] = load_primary(bench, args.scale)
    print(f"primary loaded: {result['setup']}", flush=True)
    for n in range(args.rounds):
        result["rounds"].append(data_round(bench, args))
        print(f"round {n + 1}: {result['rounds'][-1]}", flush=True)
    result["breakdown"] = breakdown(bench)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70: ~1 GB)")
    parser.add_argument("--load-seconds", type=int, default=30)
    parser.add_argument("--cut-seconds", type=int, default=30)
    parser.add_argument("--rate", type=int, default=RATE, help="tps of the write loads")
    args = parser.parse_args()
    start, load_before = time.monotonic(), os.getloadavg()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            result = run(args, Path(workdir))
    finally:
        lab_hosts.down(LAB)
    figures = figures_of(result)
    table, met = target_table(figures)
    result.update(
        median=figures,
        met=met,
        arguments=vars(args),
        seconds=time.monotonic() - start,
        loadavg_before=load_before,
        loadavg_after=os.getloadavg(),
    )
    show(result, table)
    out = ROOT / "results" / "lab_timings.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
