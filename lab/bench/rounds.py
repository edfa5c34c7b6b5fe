"""The benchmark's rounds and its run (see lab/bench/__init__.py)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab import bench
from lab import namespaces as lab_hosts
from lab.bench.figures import figures_of, show, target_table
from lab.bench.lab import DB, LAB, PGBIN, UP_TIMEOUT, Bench, BenchError, psql, ssh, timed
from lab.bench.load import RATE, lag_under_load, link_cut
from lab.bench.observer import Observer
from lab.stack import ROOT, LabStack

FLOOR = """set -e
d=/var/lib/postgresql/bench-floor
rm -rf "$d"
s=$(date +%s.%N)
runuser -u postgres -- {pgbin}/pg_basebackup -D "$d" -X stream -c fast -w -d '{conninfo}'
e=$(date +%s.%N)
rm -rf "$d"
echo "$s $e"
"""


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


def breakdown(bench: Bench) -> dict:
    """One more `up` adding a replica at 1 GB, observed: where its time goes (outside the
    medians: the observer costs CPU). Spans in seconds from the start of `pulumi up`."""
    bench.reset()
    observer = Observer()
    observer.start()
    took = bench.up(1)
    return {"up_s": took, "spans": observer.report(bench.up_started)}


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
    summary = bench.__doc__.splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m lab.bench", description=summary)
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
