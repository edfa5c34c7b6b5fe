#!/usr/bin/env python3
"""Runs the hosts-mode step plan directly over ssh: the same host scripts, parameters and order
as the Pulumi program's `remote.Command`s. For the lab and for machines without the engine.

    python3 scripts/apply_hosts.py --stack lab --secrets-file F [--known-hosts F] [--reseed NAME]

Prints the stack outputs as JSON (the shape of `pulumi stack output --json --show-secrets`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components import plan  # noqa: E402
from components.config import SECRET_KEYS, ConfigError, parse_settings  # noqa: E402
from components.outputs import stack_outputs  # noqa: E402
from components.stack_file import read_stack_file  # noqa: E402

STEP_TIMEOUT = 1800  # seconds; a base backup of a large primary takes a while


class StepFailed(RuntimeError):
    pass


def ssh_argv(node: plan.Node, key_file: Path, known_hosts: Path | None) -> list[str]:
    """ssh with the host key checked: the stack's `hostKey` when set, else `known_hosts`,
    else trust on first use (recorded in ~/.ssh/known_hosts)."""
    if node.host_key:
        pinned = key_file.with_name(f"known_hosts.{node.name}")
        host = (
            node.public_address
            if node.ssh_port == 22
            else f"[{node.public_address}]:{node.ssh_port}"
        )
        pinned.write_text(f"{host} {node.host_key}\n")
        known_hosts = pinned
    checking = (
        ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        if known_hosts
        else ["-o", "StrictHostKeyChecking=accept-new"]
    )
    return [
        "ssh",
        "-i",
        str(key_file),
        "-p",
        str(node.ssh_port),
        *checking,
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentitiesOnly=yes",
        f"{node.ssh_user}@{node.public_address}",
        plan.command_line(node.ssh_user),
    ]


def run_step(
    step: plan.Step,
    secrets: dict,
    key_file: Path,
    known_hosts: Path | None,
    extra_params: dict | None = None,
) -> str:
    params = {**step.params, **(extra_params or {})}
    stdin = json.dumps(plan.payload(step, params, secrets))
    try:
        result = subprocess.run(
            ssh_argv(step.node, key_file, known_hosts),
            input=stdin,
            text=True,
            capture_output=True,
            timeout=STEP_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise StepFailed(f"{step.name}: no answer within {STEP_TIMEOUT} s") from None
    for line in result.stderr.splitlines():
        print(f"[{step.name}] {line}", file=sys.stderr)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        # A host script's failure is its "error: ..." line and what follows it.
        errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
        last = " ".join(lines[errors[0] :]).removeprefix("error: ") if errors else lines[-1]
        if result.returncode == 255:
            last = (
                f"ssh to {step.node.ssh_user}@{step.node.public_address}:{step.node.ssh_port}"
                f" failed: {last}"
            )
        raise StepFailed(f"{step.name} failed: {last}")
    return result.stdout


def apply(
    stack_file: Path, secrets: dict, known_hosts: Path | None, reseed: frozenset[str] = frozenset()
) -> dict:
    raw, _ = read_stack_file(stack_file)
    settings = parse_settings(raw, set(secrets))
    if settings.mode != "hosts":
        raise ConfigError(
            f"{stack_file.name} is in {settings.mode} mode; only hosts mode runs without the engine"
        )
    nodes = plan.nodes_from_hosts(settings)
    steps = plan.steps(settings, nodes, reseed=reseed)
    with tempfile.TemporaryDirectory(prefix="mastodon-data-") as private_dir:
        key_file = Path(private_dir) / "id"
        key_file.touch(mode=0o600)
        key_file.write_text(secrets["sshPrivateKey"].rstrip("\n") + "\n")
        run = lambda step, extra=None: run_step(step, secrets, key_file, known_hosts, extra)  # noqa: E731
        stdout = {"primary": run(steps[0])}
        from_primary = plan.from_primary(plan.parse_report(stdout["primary"]))
        replicas = [s for s in steps if s.script == "replica"]
        with ThreadPoolExecutor(max_workers=max(1, len(replicas))) as pool:
            for step, out in zip(
                replicas, pool.map(lambda s: run(s, from_primary), replicas), strict=True
            ):
                stdout[step.name] = out
        status = {s.node.name: run(s) for s in steps if s.script == "status"}
    ca_cert = plan.parse_report(stdout["primary"]).get("ca_cert", "")
    outputs = stack_outputs(settings, nodes, secrets["dbPassword"], status, ca_cert)
    outputs["steps"] = {name: out.strip().splitlines()[-1] for name, out in stdout.items()}
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True, help="reads Pulumi.<stack>.yaml")
    parser.add_argument(
        "--secrets-file",
        required=True,
        type=Path,
        help=f"JSON object with {', '.join(SECRET_KEYS)}",
    )
    parser.add_argument("--known-hosts", type=Path)
    parser.add_argument(
        "--reseed",
        action="append",
        default=[],
        help="replica name to wipe and clone again (a cluster of another primary)",
    )
    args = parser.parse_args(argv)
    secrets = json.loads(args.secrets_file.read_text())
    try:
        outputs = apply(
            ROOT / f"Pulumi.{args.stack}.yaml", secrets, args.known_hosts, frozenset(args.reseed)
        )
    except (ConfigError, StepFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(outputs, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
