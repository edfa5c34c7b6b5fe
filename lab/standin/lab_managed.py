#!/usr/bin/env python3
"""Managed mode end to end without a cloud (`make lab-managed`): the stand-in of the DigitalOcean
API up, a stack shaped like Pulumi.prod.yaml (a PostgreSQL cluster with a standby, the pool, a
read-only node, Valkey with a standby, media in Spaces behind the CDN) through `pulumi up` with
the real DigitalOcean provider; then, from an app droplet with the stack's `appTag` (the only
way in past the trusted sources), `mastodon-data grant`, `.env.production` rendered and each group
of its variables used as Mastodon uses it (lab/standin/managed_check.py). A second run changes
nothing. `down` (`make lab-managed-down`) removes the stand-in, its nodes and the stack. Its
pieces (managed_stack, app_ready, on_app) serve other labs too (lab/bench_managed).

    python -m lab.standin.lab_managed up [--env-file PATH]
    python -m lab.standin.lab_managed down
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab.standin._lab import OPERATOR_COMMAND, ROOT, EngineMissing, LabStack, PulumiFailed
from lab.standin.client import Client, coverage_line
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


def app_droplet(lab: StandInLab, client: Client, outputs: dict, config: dict) -> dict:
    """The Mastodon server: a droplet in the stack's VPC with its appTag (the state's record)."""
    key = client.register_key(f"{lab.prefix}-operator", lab.hosts.ensure_operator_key())
    droplet = client.ensure_droplet({
        "name": APP_DROPLET, "region": config["region"], "size": "s-1vcpu-1gb",
        "image": "debian-12-x64", "vpc_uuid": outputs["vpc_id"], "tags": [config["appTag"]],
        "ssh_keys": [key["id"]],
    })  # fmt: skip
    return client.state()["droplets"][str(droplet["id"])]


def on_app(lab: StandInLab, droplet: dict, argv: list[str], stdin: str, **run) -> str | None:
    """`argv` on the app droplet (its output shown, or returned with `capture_output=True`); a
    failure stops the lab."""
    result = subprocess.run(
        lab.hosts.on_host_command(droplet, *argv), input=stdin, text=True, cwd=ROOT,
        **{"timeout": 180, **run},
    )  # fmt: skip
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv[:3])} on {APP_DROPLET} exited {result.returncode}")
    return result.stdout


@dataclass
class ManagedStack:
    """The prod-like stack of a stand-in lab, up, with its app droplet ready (see up())."""

    client: Client
    stack: LabStack
    outputs: dict
    droplet: dict

    @property
    def document(self) -> str:
        """The stack's outputs as the app side reads them on stdin (secrets included)."""
        return json.dumps(self.outputs)


def managed_stack(lab: StandInLab, name: str, bucket: str) -> tuple[Client, dict, LabStack]:
    """The stand-in started and stack `name` configured like Pulumi.prod.yaml (not yet up)."""
    client = Client(lab.start().url, token=f"dop_v1_standin-{name}")
    config = managed_config(lab.vpc_pool[0], bucket)
    return client, config, standin_stack(lab, client, name, lab.state_dir / "stack", config, {})


def app_ready(lab: StandInLab, client: Client, stack: LabStack, config: dict, env_file: Path):
    """After `up`: the outputs shown, the app droplet made, `grant`, `.env.production` rendered
    there and each group of its variables checked; the stack as a ManagedStack."""
    outputs = stack.outputs()
    shown = {k: "[secret]" for k in ("mastodon_env", "postgres_admin")}
    print(json.dumps({**outputs, **shown}, indent=2, sort_keys=True))
    managed = ManagedStack(client, stack, outputs, app_droplet(lab, client, outputs, config))
    for argv in (
        [str(OPERATOR_COMMAND), "grant"],
        [str(OPERATOR_COMMAND), "render-env", "--output", str(env_file)],
        [sys.executable, "-m", "lab.standin.managed_check", str(env_file)],
    ):
        on_app(lab, managed.droplet, argv, managed.document)
    return managed


def up(env_file: Path) -> int:
    started = time.monotonic()
    client, config, stack = managed_stack(LAB, STACK, BUCKET)
    print(stack.up(), end="")
    app_ready(LAB, client, stack, config, env_file)
    print(coverage_line(client, LAB.request_log, time.monotonic() - started))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--env-file", type=Path, default=ROOT / ".env.production")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            return up(args.env_file)
        return LAB.remove("nodes, droplets, networks, stack, state")
    except (LabError, EngineMissing, PulumiFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
