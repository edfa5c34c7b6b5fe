#!/usr/bin/env python3
"""Benchmark of a change of the primary (issue 22) on a lab of its own (mlsb, hosts mode,
primary + 2 replicas, PgBouncer on each), through the engine, in one run:

- switchover: `mastodon-data switchover` to the first replica under a write load of 8 clients
  through Mastodon's env (lab/write_load.py): the longest wait of any client between two of its
  commits (the write pause), the command's own pause (first PAUSE to last RESUME), the client
  errors, the whole command (with its `pulumi up`);
- failover: the new primary's PostgreSQL killed (SIGKILL), `mastodon-data failover promote` of
  a replica started at once; the time from the kill to the first write accepted through the
  env's new DB_HOST, and the command's own time.

Prints the figures and writes them to results/switchover_timings.json (ignored). Root; about
five minutes. The lab is removed at the end, also on failure.

    venv/bin/python -m lab.bench_switchover
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab import namespaces as lab_hosts
from lab.bench_run import write_figures
from lab.stack import ROOT, LabStack
from lab.write_load import WriteLoad, first_write_s

LAB = lab_hosts.Lab(
    prefix="mlsb", subnet="10.239.0.0/24", state_dir=Path("/var/lib/mastodon-lab-switch-bench")
)
COMMAND = str(Path(sys.executable).parent / "mastodon-data")
SETTLE = 2  # seconds of load before and after the switchover
LIMIT = 300  # seconds for the first write after a failover


def tool(stack: LabStack, *args: str) -> tuple[dict, dict]:
    """A mastodon-data command as an operator runs it: (its summary, the new outputs)."""
    argv = [COMMAND, *args[:1], "--stack", stack.name, "--cwd", str(stack.workdir), *args[1:]]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=stack.env())
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {result.stderr}")
    return json.loads(result.stderr[result.stderr.rindex("\n{\n") + 1 :]), json.loads(result.stdout)


def switchover_under_load(stack: LabStack, env: dict, target: str, clients: int = 8) -> dict:
    """`mastodon-data switchover target` while `clients` write through `env` (kept as it was).
    Returns the summary, the new outputs, the load and the figures."""
    with WriteLoad(env, clients) as load:
        time.sleep(SETTLE)
        start = time.monotonic()
        summary, outputs = tool(stack, "switchover", target)
        took = round(time.monotonic() - start, 2)
        time.sleep(SETTLE)
    phases = (
        "paused_s", "pause_others_s", "fence_and_take_over_s", "repoint_and_resume_s",
        "catch_up_s",
    )  # fmt: skip
    figures = {
        "switchover_longest_write_pause_s": load.longest_pause_s,
        **{f"switchover_{phase}": summary[phase] for phase in phases},
        "switchover_client_errors": len(load.errors),
        "switchover_rows_committed": len(load.rows),
        "switchover_command_s": took,
    }
    return {"summary": summary, "outputs": outputs, "load": load, "figures": figures}


def failover_time(stack: LabStack, lab: lab_hosts.Lab, env: dict, dead: int, target: int) -> dict:
    """Host `dead`'s PostgreSQL killed, `mastodon-data failover promote` of host `target` at
    once, while a client tries to write through the env as it will be (DB_HOST the target's
    pool): the time from the kill to its first accepted write, and the command's time."""
    new_host = lab.host(target)
    kill = "kill -9 $(head -1 /var/lib/postgresql/15/main/postmaster.pid)"
    subprocess.run(
        lab.ssh_command(lab.host(dead).address, kill), check=True, capture_output=True, timeout=60
    )
    death = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(first_write_s, {**env, "DB_HOST": new_host.address}, death, LIMIT)
        summary, outputs = tool(stack, "failover", "promote", new_host.name)
        command = round(time.monotonic() - death, 2)
        figures = {
            "failover_first_write_s": first.result(),
            "failover_promote_s": summary["promote_s"],
            "failover_pools_repointed_s": summary["pools_repointed_s"],
            "failover_command_s": command,
        }
    return {**figures, "failover_new_db_host": outputs["mastodon_env"]["DB_HOST"]}


def stack_secrets(lab: lab_hosts.Lab) -> dict[str, str]:
    return {
        "sshPrivateKey": lab.private_key.read_text(),
        **{key: secrets.token_urlsafe(24) for key in ("replicationPassword", "dbPassword")},
    }


def main() -> int:
    lab_hosts.down(LAB)
    try:
        lab_hosts.up(LAB, 3)
        with tempfile.TemporaryDirectory(prefix="mlsb-bench-") as workdir:
            stack = LabStack("switchbench", Path(workdir) / "stack")
            stack.prepare()
            stack.configure(lab_hosts.stack_config(LAB, 2, 3), stack_secrets(LAB))
            stack.up()
            env = stack.outputs()["mastodon_env"]
            switched = switchover_under_load(stack, env, LAB.host(2).name)
            figures = switched["figures"]
            figures |= failover_time(stack, LAB, switched["outputs"]["mastodon_env"], 2, 3)
    finally:
        lab_hosts.down(LAB)
    write_figures(ROOT / "results" / "switchover_timings.json", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
