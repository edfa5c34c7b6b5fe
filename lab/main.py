#!/usr/bin/env python3
"""The main job on the built-in lab (`make lab`): lab hosts up, `pulumi up` of the `lab` stack
through the Pulumi engine, then `.env.production` rendered from the outputs and the replication
check run. A second run changes nothing.

    venv/bin/python -m lab.main [--hosts N] [--env-file PATH]      # from the project directory

The stack's working directory (config with secrets, state, passphrase) is in the lab's directory,
so `make lab-down` removes it with the hosts.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
from pathlib import Path

import yaml

from lab import namespaces as lab_hosts
from lab.stack import ROOT, EngineMissing, LabStack, PulumiFailed, write_private

STACK = "lab"


def lab_secrets(lab: lab_hosts.Lab) -> dict:
    """Per-lab secrets (0600 in the lab's directory): the lab key and two random passwords."""
    path = lab.state_dir / "secrets.json"
    if not path.exists():
        values = {
            "sshPrivateKey": lab.private_key.read_text(),
            "replicationPassword": secrets.token_urlsafe(24),
            "dbPassword": secrets.token_urlsafe(24),
        }
        write_private(path, json.dumps(values))
    return json.loads(path.read_text())


def lab_config(lab: lab_hosts.Lab, count: int) -> dict:
    """The tracked `Pulumi.lab.yaml` for the first `count` hosts, host keys pinned (each lab
    makes new ones)."""
    document = yaml.safe_load((ROOT / f"Pulumi.{STACK}.yaml").read_text())
    config = {k.partition(":")[2]: v for k, v in document["config"].items()}
    keys = {lab.host(i).address: lab_hosts.host_key(lab.host(i)) for i in range(1, count + 1)}
    config["hosts"] = [
        {**h, "hostKey": keys[h["publicAddress"]]}
        for h in config["hosts"]
        if h["publicAddress"] in keys
    ]
    return config


def lab_stack(lab: lab_hosts.Lab) -> LabStack:
    return LabStack(STACK, lab.state_dir / "stack")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--env-file", type=Path, default=ROOT / ".env.production")
    args = parser.parse_args(argv)
    lab = lab_hosts.lab_from_env()
    stack = lab_stack(lab)
    try:
        lab_hosts.up(lab, args.hosts)
        stack.prepare()
        stack.configure(lab_config(lab, args.hosts), lab_secrets(lab))
        print(stack.up(), end="")
        outputs = stack.outputs()
    except (lab_hosts.LabError, EngineMissing, PulumiFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    shown = {**outputs, "mastodon_env": "[secret]"}
    print(json.dumps(shown, indent=2, sort_keys=True))
    document = json.dumps(outputs)
    # The operator's command, installed into the venv beside this interpreter.
    command = str(Path(sys.executable).parent / "mastodon-data")
    for tool in (["render-env", "--output", str(args.env_file)], ["check-replication"]):
        result = subprocess.run(
            [command, *tool],
            input=document,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
