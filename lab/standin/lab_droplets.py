#!/usr/bin/env python3
"""Droplets mode end to end without a cloud (`make lab-droplets`): the stand-in of the
DigitalOcean API up, a dev-like droplets stack (primary + 2 replicas) through `pulumi up` with the
real DigitalOcean provider, whose droplets are lab hosts; then the outputs, `.env.production`
rendered and the replication checked, as `make lab` does for hosts mode. A second run changes
nothing. `down` (`make lab-droplets-down`) removes the stand-in, its droplets and the stack.

    python -m lab.standin.lab_droplets up [--replicas N] [--env-file PATH]
    python -m lab.standin.lab_droplets down
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from lab.standin._lab import OPERATOR_COMMAND, ROOT, EngineMissing, PulumiFailed
from lab.standin.client import Client, coverage_line
from lab.standin.service import StandInLab
from lab.standin.stack import droplets_config, stack_secrets, standin_stack
from lab.system import LabError

LAB = StandInLab()  # mlabd: public 10.241.0.0/24, VPC 10.240.0.0/24, /var/lib/mastodon-lab-do
STACK = "lab-droplets"


def up(replicas: int, env_file: Path) -> int:
    started = time.monotonic()
    client = LAB.start()
    client = Client(client.url, token=f"dop_v1_standin-{STACK}")
    key = client.register_key(f"{LAB.prefix}-operator", LAB.hosts.ensure_operator_key())
    config = droplets_config(LAB, key["id"], LAB.vpc_pool[0], replicas)
    secrets = stack_secrets(LAB, LAB.state_dir / "secrets.json")
    stack = standin_stack(LAB, client, STACK, LAB.state_dir / "stack", config, secrets)
    print(stack.up(), end="")
    outputs = stack.outputs()
    print(json.dumps({**outputs, "mastodon_env": "[secret]"}, indent=2, sort_keys=True))
    document = json.dumps(outputs)
    for tool in (["render-env", "--output", str(env_file)], ["check-replication"]):
        result = subprocess.run(
            [str(OPERATOR_COMMAND), *tool],
            input=document,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            return result.returncode
    print(coverage_line(client, LAB.request_log, time.monotonic() - started))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--env-file", type=Path, default=ROOT / ".env.production")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            return up(args.replicas, args.env_file)
        return LAB.remove("droplets, networks, stack, state")
    except (LabError, EngineMissing, PulumiFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
