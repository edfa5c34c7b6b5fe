#!/usr/bin/env python3
"""The main job on the built-in lab (`make lab`): lab hosts and the lab's S3 store up, `pulumi up`
of the `lab` stack through the Pulumi engine, then `.env.production` rendered from the outputs,
the replication check run with the exporters asked (they run on every host), and the
backups checked (a first full backup taken when the repository has none). A second run changes
nothing.

    venv/bin/python -m lab.main [--hosts N] [--env-file PATH]      # from the project directory

The stack's working directory (config with secrets, state, passphrase) and the S3 store are in
the lab's directory, so `make lab-down` removes them with the hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import yaml

from lab import namespaces as lab_hosts
from lab.s3 import LabS3, S3Error
from lab.stack import ROOT, EngineMissing, LabStack, PulumiFailed, write_private
from lab.system import wait_for_port

STACK = "lab"
# The lab's S3 store: moto on loopback, TLS on the operator address; a test's lab sets others.
S3_PORTS = tuple(int(p) for p in os.environ.get("LAB_S3_PORTS", "19050,19051").split(","))
# The operator's command, installed into the venv beside this interpreter.
COMMAND = str(Path(sys.executable).parent / "mastodon-data")


def lab_secrets(lab: lab_hosts.Lab) -> dict:
    """Per-lab secrets (0600 in the lab's directory): the lab key, random passwords and the
    backup repository's passphrase and key (added to a lab made before backups were on)."""
    path = lab.state_dir / "secrets.json"
    values = json.loads(path.read_text()) if path.exists() else {}
    made = {
        "sshPrivateKey": lambda: lab.private_key.read_text(),
        "replicationPassword": lambda: secrets.token_urlsafe(24),
        "dbPassword": lambda: secrets.token_urlsafe(24),
        "backupCipherPassphrase": lambda: secrets.token_urlsafe(32),
        "backupSecretAccessKey": lambda: secrets.token_urlsafe(30),
        "monitorPassword": lambda: secrets.token_urlsafe(24),
    }
    missing = {key: make() for key, make in made.items() if key not in values}
    if missing:
        values |= missing
        write_private(path, json.dumps(values))
    return values


def lab_store(lab: lab_hosts.Lab, bucket: str) -> LabS3:
    """The lab's S3 store with the backup bucket, kept running between runs: a new one would
    have a new CA (a config change) and forget the repository."""
    store = LabS3(lab.operator_address, lab.store_dir, *S3_PORTS)  # type: ignore[misc]
    if not (store.ca_cert.exists() and wait_for_port(store.address, store.tls_port, 1)):
        store.start()
        store.make_bucket(bucket)
    return store


def lab_config(lab: lab_hosts.Lab, count: int) -> dict:
    """The tracked `Pulumi.lab.yaml` for the first `count` hosts, laid on this lab's names and
    addresses (the same for `make lab`), host keys pinned (each lab makes new ones), and the
    lab's S3 store as the backup repository."""
    document = yaml.safe_load((ROOT / f"Pulumi.{STACK}.yaml").read_text())
    config = {k.partition(":")[2]: v for k, v in document["config"].items()}
    hosts = [lab.host(i) for i in range(1, count + 1)]
    config["hosts"] = [
        {**entry, "name": host.name, "publicAddress": host.address, "privateAddress": host.address,
         "hostKey": lab_hosts.host_key(host)}
        for entry, host in zip(config["hosts"], hosts, strict=False)
    ]  # fmt: skip
    config["postgresAllowedSources"] = [lab.subnet]
    config["monitoringSources"] = [f"{lab.operator_address}/32"]
    store = lab_store(lab, config["backupBucket"])
    config |= {"backupEndpoint": store.endpoint, "backupCaCert": store.ca_cert.read_text()}
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
    except (lab_hosts.LabError, EngineMissing, PulumiFailed, S3Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    document = json.dumps(outputs)
    for tool in (
        ["render-env", "--output", str(args.env_file)],
        ["check-replication", "--exporters"],
    ):
        result = subprocess.run([COMMAND, *tool], input=document, text=True, timeout=120)
        if result.returncode != 0:
            return result.returncode
    return check_backups(stack)


def backups(stack: LabStack, *args: str) -> tuple[int, dict]:
    """`mastodon-data backups <args>` on the lab stack (its summary line shown): its exit code
    and JSON report."""
    argv = [COMMAND, "backups", "--stack", stack.name, "--cwd", str(stack.workdir), *args]
    result = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=900, env=stack.env())
    try:
        return result.returncode, json.loads(result.stdout)
    except ValueError:
        return result.returncode or 1, {}


def check_backups(stack: LabStack) -> int:
    """The backup check; a first full backup when the repository has none yet."""
    code, report = backups(stack, "check")
    if report and not report.get("last_backup"):
        print("no backup in the repository yet: taking the first full backup", file=sys.stderr)
        code, _ = backups(stack, "now", "--type", "full")
        if code == 0:
            code, report = backups(stack, "check")
    return code


if __name__ == "__main__":
    sys.exit(main())
