"""The read endpoint's benchmark run (lab/bench_read_endpoint/__init__.py says what it
measures)."""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from lab.bench_run import run_benchmark
from lab.read_endpoint_probe import probes_over, spread
from lab.standin._lab import ROOT
from lab.standin.service import StandInLab
from lab.standin.stack import droplets_config, stack_secrets, standin_stack

LAB = StandInLab(
    prefix="mlrb",
    public_network="10.241.90.0/24",
    vpc_pool=("10.240.90.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-read-endpoint-bench"),
)
STACK = "bench-read"
RESULTS = ROOT / "results" / "read_endpoint_timings.json"
WATCH = 20  # seconds of new connections after a kill (the health bound is 9 s)
WAIT = 90  # seconds for a replica to be in rotation
# pgbench's read: one catalog count per transaction, no tables to load first.
READ_SCRIPT = "SELECT count(*) FROM pg_class;\n"


def ssh(address: str, command: str) -> str:
    argv = LAB.hosts.ssh_command(address, command)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout


def wait_in_rotation(env: dict, replica: dict) -> float:
    started, address = time.monotonic(), replica["private_address"]
    while time.monotonic() - started < WAIT:
        if address in spread(env, 6)[0]:
            return round(time.monotonic() - started, 1)
        time.sleep(0.5)
    health = ssh(replica["public_address"], f"curl -s http://{address}:8008/replica || true")
    raise RuntimeError(f"replica {address} not in rotation within {WAIT} s; its health: {health}")


def dead_replica_leaves(env: dict, replica: dict) -> dict:
    """Kills the replica's PostgreSQL; new connections every 100 ms for WATCH seconds, none
    waiting for another: when the last one that landed on it (or failed, or hung) was sent; then
    100 reads while it is still dead, and the time it takes to come back once restarted."""
    address = replica["private_address"]
    wait_in_rotation(env, replica)
    ssh(replica["public_address"], "pkill -KILL --ns $$ --nslist net -x postgres")
    after = probes_over(env, WATCH)
    last = max((at for at, where in after if where in (address, "failed", "timeout")), default=0)
    failures_after = spread(env, 100)[1]  # 100 reads, one a time, with the replica still dead
    ssh(replica["public_address"], "pg_ctlcluster 15 main start")
    return {"left_after_s": round(last, 1), "probes": len(after),
            "failed_reads_of_100_after": failures_after,
            "back_after_restart_s": wait_in_rotation(env, replica)}  # fmt: skip


def pgbench(env: dict, host: str, clients: int, seconds: int) -> tuple[float, float]:
    """(read transactions per second, average latency in ms) through `host`:REPLICA_DB_PORT,
    persistent connections."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(READ_SCRIPT)
        script.flush()
        process_env = {**os.environ, "PGPASSWORD": env["REPLICA_DB_PASS"],
                       "PGSSLMODE": env["DB_SSLMODE"]}  # fmt: skip
        argv = ["pgbench", "-n", "-M", "simple", "-f", script.name, "-c", str(clients),
                "-j", str(min(2, clients)), "-T", str(seconds), "-h", host,
                "-p", env["REPLICA_DB_PORT"], "-U", env["REPLICA_DB_USER"],
                env["REPLICA_DB_NAME"]]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, env=process_env,
                             timeout=seconds + 120, check=True).stdout  # fmt: skip
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    latency = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))
    return round(tps, 1), round(latency, 3)


def throughput(env: dict, replica: dict, args) -> dict:
    """Through the endpoint and straight to one replica's pool, one after the other in each
    round, so that both meet the same load from the rest of the machine: `clients` at once
    (throughput, the median ratio), then one client (the latency the proxy's hop adds, which
    on a machine of its own is the proxy's whole cost)."""
    rounds = []
    for _ in range(args.rounds):
        ways = {"through_endpoint": env["REPLICA_DB_HOST"],
                "one_replica_pool": replica["private_address"]}  # fmt: skip
        tps = {way: pgbench(env, host, args.clients, args.pgbench_seconds)[0]
               for way, host in ways.items()}  # fmt: skip
        latency = {way: pgbench(env, host, 1, args.pgbench_seconds)[1]
                   for way, host in ways.items()}  # fmt: skip
        rounds.append({"tps": tps, "ratio": round(tps["through_endpoint"] /
                       tps["one_replica_pool"], 2), "one_client_latency_ms": latency,
                       "added_ms": round(latency["through_endpoint"] -
                       latency["one_replica_pool"], 3)})  # fmt: skip
    return {
        "read_rounds": rounds,
        "endpoint_vs_one_pool": statistics.median(r["ratio"] for r in rounds),
        "endpoint_added_latency_ms": statistics.median(r["added_ms"] for r in rounds),
    }


def measure(args, figures: dict) -> None:
    client = LAB.start()
    key = client.register_key(f"{LAB.prefix}-operator", LAB.hosts.ensure_operator_key())
    workdir = Path(tempfile.mkdtemp(prefix="bench-read-endpoint-"))
    config = droplets_config(LAB, key["id"], "10.240.90.0/24", 3, protectData=False)
    secrets = stack_secrets(LAB, workdir / "secrets.json")
    stack = standin_stack(LAB, client, STACK, workdir / "stack", config, secrets)
    started = time.monotonic()
    stack.up()
    figures["up_s"] = round(time.monotonic() - started, 1)
    outputs = stack.outputs()
    env, replicas = outputs["mastodon_env"], outputs["replicas"]
    for replica in replicas:
        wait_in_rotation(env, replica)
    figures["spread_300"] = dict(spread(env, 300)[0])
    kills = [dead_replica_leaves(env, replicas[i % len(replicas)]) for i in range(args.kills)]
    figures["dead_replica"] = kills
    figures["dead_replica_left_after_s"] = [k["left_after_s"] for k in kills]
    figures |= {"pgbench_clients": args.clients, "pgbench_seconds": args.pgbench_seconds,
                **throughput(env, replicas[0], args)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="make bench-read-endpoint")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--pgbench-seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (median)")
    args = parser.parse_args(argv)
    return run_benchmark(LAB, RESULTS, lambda figures: measure(args, figures), ("dead_replica",))
