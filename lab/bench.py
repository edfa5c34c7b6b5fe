#!/usr/bin/env python3
"""Benchmark of `pulumi up` of a hosts-mode stack on a lab of its own, through the engine: first
run (cluster creation and clones), a no-change re-run, and adding one replica. Prints the figures
and writes them to results/lab_timings.json (ignored). Root; takes about a minute.

    venv/bin/python -m lab.bench [--repeat N]     # from the project directory
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lab import namespaces as lab_hosts
from lab.stack import ROOT, LabStack

BENCH_LAB = lab_hosts.Lab(
    prefix="mlabb", subnet="10.254.0.0/24", state_dir=Path("/var/lib/mastodon-lab-bench")
)


def timed(fn) -> tuple[float, dict]:
    start = time.monotonic()
    result = fn()
    return time.monotonic() - start, result


def one_round(workdir: Path) -> dict[str, float]:
    lab_hosts.down(BENCH_LAB)
    lab_up, _ = timed(lambda: lab_hosts.up(BENCH_LAB, 4))
    values = {
        "sshPrivateKey": BENCH_LAB.private_key.read_text(),
        "replicationPassword": secrets.token_urlsafe(24),
        "dbPassword": secrets.token_urlsafe(24),
    }

    stack = LabStack("bench", workdir / f"stack-{time.monotonic_ns()}")
    stack.prepare()

    def apply(replicas: int) -> float:
        """Seconds of `pulumi up` alone (the configuration is written before)."""
        stack.configure(lab_hosts.stack_config(BENCH_LAB, replicas, 4), values)
        return timed(stack.up)[0]

    first = apply(2)
    again = apply(2)
    assert stack.last_changes() == {"same": 8}
    grow = apply(3)
    lab_hosts.down(BENCH_LAB)
    return {
        "lab_up_4_hosts_s": lab_up,
        "first_run_primary_2_replicas_s": first,
        "no_change_rerun_s": again,
        "add_third_replica_s": grow,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.repeat):
            rounds.append(one_round(Path(workdir)))
    figures = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    figures["rerun_vs_first_ratio"] = (
        figures["no_change_rerun_s"] / figures["first_run_primary_2_replicas_s"]
    )
    for key, value in figures.items():
        print(f"{key:34} {value:8.2f}")
    out = ROOT / "results" / "lab_timings.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rounds": rounds, "median": figures}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
