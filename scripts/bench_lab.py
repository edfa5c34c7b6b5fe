#!/usr/bin/env python3
"""Benchmark of the replication steps on a lab of its own: first run (install-free cluster
creation and clones), a no-change re-run, and adding one replica. Prints the figures and writes
them to results/lab_timings.json. Root; takes about a minute.

    venv/bin/python scripts/bench_lab.py [--repeat N]
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

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import apply_hosts  # noqa: E402
import lab as lab_hosts  # noqa: E402

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

    def apply(replicas: int) -> dict:
        path = workdir / f"Pulumi.bench{replicas}.yaml"
        path.write_text(yaml.safe_dump({"config": lab_hosts.stack_config(BENCH_LAB, replicas, 4)}))
        return apply_hosts.apply(path, values, BENCH_LAB.known_hosts)

    first, _ = timed(lambda: apply(2))
    again, outputs = timed(lambda: apply(2))
    assert all(json.loads(s)["changed"] == [] for s in outputs["steps"].values())
    grow, _ = timed(lambda: apply(3))
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
