#!/usr/bin/env python3
"""Managed mode end to end without a cloud (`make lab-managed`): the stand-in of the DigitalOcean
API up, a stack shaped like Pulumi.prod.yaml (a PostgreSQL cluster with a standby, the pool, a
read-only node, Valkey with a standby, media in Spaces behind the CDN) through `pulumi up` with
the real DigitalOcean provider; then, from an app droplet with the stack's `appTag` (the only
way in past the trusted sources), `mastodon-data grant`, `.env.production` rendered and each group
of its variables used as Mastodon uses it (lab/standin/managed_check.py). A second run changes
nothing. `down` (`make lab-managed-down`) removes the stand-in, its nodes and the stack.

    python -m lab.standin.lab_managed up [--env-file PATH]
    python -m lab.standin.lab_managed down
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from lab.standin._lab import OPERATOR_COMMAND, ROOT, EngineMissing, PulumiFailed
from lab.standin.client import Client, coverage
from lab.standin.service import StandInLab
from lab.standin.stack import managed_config, standin_stack
from lab.system import LabError

LAB = StandInLab(
    prefix="mlabm",
    public_network="10.241.100.0/24",
    vpc_pool=("10.240.100.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-managed"),
)
STACK = "lab-managed"
BUCKET = "lab-managed-media"
APP_DROPLET = "mastodon-app-1"  # stands for a Mastodon web/sidekiq server


def app_droplet(client: Client, outputs: dict, config: dict) -> dict:
    """The Mastodon server: a droplet in the stack's VPC with its appTag (the state's record)."""
    key = client.register_key(f"{LAB.prefix}-operator", LAB.hosts.ensure_operator_key())
    droplet = client.ensure_droplet({
        "name": APP_DROPLET, "region": config["region"], "size": "s-1vcpu-1gb",
        "image": "debian-12-x64", "vpc_uuid": outputs["vpc_id"], "tags": [config["appTag"]],
        "ssh_keys": [key["id"]],
    })  # fmt: skip
    return client.state()["droplets"][str(droplet["id"])]


def on_app(droplet: dict, argv: list[str], stdin: str) -> None:
    """`argv` on the app droplet; its output shown; a failure stops the lab."""
    result = subprocess.run(
        LAB.hosts.on_host_command(droplet, *argv), input=stdin, text=True, timeout=180, cwd=ROOT
    )
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv[:3])} on {APP_DROPLET} exited {result.returncode}")


def up(env_file: Path) -> int:
    started = time.monotonic()
    client = Client(LAB.start().url, token=f"dop_v1_standin-{STACK}")
    config = managed_config(LAB.vpc_pool[0], BUCKET)
    stack = standin_stack(LAB, client, STACK, LAB.state_dir / "stack", config, {})
    print(stack.up(), end="")
    outputs = stack.outputs()
    shown = {k: "[secret]" for k in ("mastodon_env", "postgres_admin")}
    print(json.dumps({**outputs, **shown}, indent=2, sort_keys=True))
    droplet = app_droplet(client, outputs, config)
    document = json.dumps(outputs)
    on_app(droplet, [str(OPERATOR_COMMAND), "grant"], document)
    on_app(droplet, [str(OPERATOR_COMMAND), "render-env", "--output", str(env_file)], document)
    on_app(droplet, [sys.executable, "-m", "lab.standin.managed_check", str(env_file)], document)
    seen = coverage(client.endpoints(), client.log())
    print(
        f"stand-in: {sum(seen['called'].values())} API requests, "
        f"{len(seen['called'])} endpoints used, "
        f"{len(seen['unimplemented_requests'])} unimplemented "
        f"({LAB.request_log}); {time.monotonic() - started:.0f} s"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--env-file", type=Path, default=ROOT / ".env.production")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            return up(args.env_file)
        rest = LAB.down()
        if rest:
            raise LabError("removal left: " + "; ".join(rest))
        print(f"stand-in lab {LAB.prefix} removed (nodes, droplets, networks, stack, state)")
        return 0
    except (LabError, EngineMissing, PulumiFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
