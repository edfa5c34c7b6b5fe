"""The managed benchmark's run (lab/bench_managed/__init__.py says what it measures)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lab.bench_managed.figures import (
    provider_waits,
    resource_summary,
    takeover_figures,
    waits_in_series,
)
from lab.bench_run import run_benchmark
from lab.standin._lab import ROOT
from lab.standin.lab_managed import ManagedStack, app_ready, managed_stack, on_app
from lab.standin.service import StandInLab
from lab.system import LabError

LAB = StandInLab(
    prefix="mlmb",
    public_network="10.241.120.0/24",
    vpc_pool=("10.240.120.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-managed-bench"),
)
STACK = "bench-managed"
BUCKET = "bench-managed-media"
RESULTS = ROOT / "results" / "managed_timings.json"
WRITES_BEFORE_KILL = 50  # commits through the pool before the primary's power-off
WRITER_SECONDS = 90  # the writer's own deadline
REPLACED_WAIT = 180  # seconds for the dead node's replacement to be up
APP = [sys.executable, "-m", "lab.bench_managed.app"]


def timed(step) -> tuple[float, object]:
    started = time.monotonic()
    result = step()
    return round(time.monotonic() - started, 2), result


def stack_figures(figures: dict, env_file: Path) -> ManagedStack:
    """From nothing: the stand-in, `pulumi up` (beside the provider's waits), the app side
    ready; then a no-change `up` and `preview --refresh --expect-no-changes`."""
    started = time.monotonic()
    client, config, stack = managed_stack(LAB, STACK, BUCKET)
    figures["first_up_s"], output = timed(stack.up)
    figures["first_up"] = resource_summary(output)
    figures["provider_waits"] = provider_waits(client.log())
    figures |= waits_in_series(figures["provider_waits"])
    figures["first_up_vs_provider_waits"] = round(
        figures["first_up_s"] / figures["provider_waits_in_series_s"], 2
    )
    managed = app_ready(LAB, client, stack, config, env_file)
    figures["lab_from_nothing_s"] = round(time.monotonic() - started, 2)
    figures["no_change_up_s"], output = timed(stack.up)
    figures["no_change_up"] = resource_summary(output)
    figures["preview_refresh_s"], _ = timed(
        lambda: stack.preview("--refresh", "--expect-no-changes")
    )
    return managed


def pool_vs_direct(figures: dict, managed: ManagedStack, env_file: Path, clients: int, seconds):
    argv = [*APP, "pgbench", str(env_file), str(clients), str(seconds)]
    out = on_app(LAB, managed.droplet, argv, managed.document, capture_output=True,
                 timeout=6 * seconds + 300)  # fmt: skip
    for line in out.splitlines():
        event = json.loads(line)
        figures[f"pgbench_{event['script']}_{event['target']}_tps"] = event["tps"]
    for script in ("tpcb-like", "select-only"):
        pool, direct = (figures[f"pgbench_{script}_{t}_tps"] for t in ("pool", "direct"))
        figures[f"pgbench_{script}_pool_vs_direct"] = round(pool / direct, 2)
    figures["pgbench_clients"] = clients


def pg_cluster(managed: ManagedStack) -> dict:
    [cluster] = [c for c in managed.client.state()["databases"].values() if c["engine"] == "pg"]
    return cluster


def takeover(managed: ManagedStack, env_file: Path, round_no: int) -> dict:
    """The primary powered off under writes through the env's pool; the writer's figures."""
    argv = [*APP, "write", str(env_file), str(round_no), str(WRITER_SECONDS)]
    errors = tempfile.TemporaryFile("w+")
    writer = subprocess.Popen(
        LAB.hosts.on_host_command(managed.droplet, *argv), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=errors, text=True, cwd=ROOT,
    )  # fmt: skip
    guard = threading.Timer(WRITER_SECONDS + 60, writer.kill)  # its deadline, and a margin
    guard.start()
    try:
        writer.stdin.write(managed.document)
        writer.stdin.close()
        lines = []
        while sum("committed" in e for e in lines) < WRITES_BEFORE_KILL:
            line = writer.stdout.readline()
            if not line:
                raise LabError(f"the writer ended before the kill: {tail(errors)}")
            lines.append(json.loads(line))
        primary = pg_cluster(managed)["nodes"][0]
        LAB.hosts.power_off(primary)  # a pulled plug
        killed = time.time()
        lines += [json.loads(line) for line in writer.stdout]
        if writer.wait(timeout=30) != 0:
            raise LabError(f"the writer exited {writer.returncode}: {tail(errors)}")
    finally:
        guard.cancel()
        writer.kill()
        errors.close()
    replaced(managed, primary["id"])
    return {**takeover_figures(lines, killed), "replaced_after_s": round(time.time() - killed, 1)}


def tail(errors) -> str:
    errors.seek(0)
    return errors.read()[-800:]


def replaced(managed: ManagedStack, dead: str) -> None:
    """Returns once the cluster has replaced node `dead` and every node is up."""
    started = time.monotonic()
    while time.monotonic() - started < REPLACED_WAIT:
        nodes = pg_cluster(managed)["nodes"]
        if dead not in [n["id"] for n in nodes] and all(n.get("host_ready") for n in nodes):
            return
        time.sleep(1)
    raise LabError(f"node {dead} not replaced within {REPLACED_WAIT} s")


def takeovers(figures: dict, managed: ManagedStack, env_file: Path, rounds: int) -> None:
    figures["takeovers"] = []
    for round_no in range(1, rounds + 1):
        figures["takeovers"].append(takeover(managed, env_file, round_no))
        print(f"takeover {round_no}: {json.dumps(figures['takeovers'][-1])}", flush=True)
    resumed = sorted(t["writes_resumed_s"] for t in figures["takeovers"])
    figures["takeover_writes_resumed_s_max"] = resumed[-1]
    figures["takeover_writes_resumed_s_median"] = resumed[len(resumed) // 2]
    figures["takeover_rows_lost"] = sum(t["rows_lost"] for t in figures["takeovers"])
    figures["takeover_rows_committed_before_kills"] = sum(
        t["committed_before_kill"] for t in figures["takeovers"]
    )


def measure(args: argparse.Namespace, figures: dict) -> None:
    env_file = LAB.state_dir / "env.production"
    managed = stack_figures(figures, env_file)
    pool_vs_direct(figures, managed, env_file, args.clients, args.pgbench_seconds)
    takeovers(figures, managed, env_file, args.takeovers)
    managed.stack.preview("--refresh", "--expect-no-changes")  # fails on any change
    figures["no_change_preview_after_takeovers"] = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="make bench-managed")
    parser.add_argument("--takeovers", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--pgbench-seconds", type=int, default=15)
    args = parser.parse_args(argv)
    return run_benchmark(
        LAB, RESULTS, lambda figures: measure(args, figures), ("provider_waits", "takeovers")
    )
