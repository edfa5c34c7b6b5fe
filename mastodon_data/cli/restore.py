"""Restore the stack's backups onto a chosen host and verify it: the latest state the archived
WAL reaches, or a point in time (`--time`). For the monthly drill on a spare host, and for a
new primary when the old one is lost: the repository alone is enough.

    mastodon-data restore --stack prod --host db-spare                      # latest
    mastodon-data restore --stack prod --host db-spare --time '2026-11-23 18:04:05+00'
    mastodon-data restore --stack prod --address 203.0.113.7 --ssh-user root  # any server

`--host` names an entry of the stack's `hosts` (a spare: the primary and the replicas are
refused); `--address` any server the stack's key reaches (its host key is trusted on first
use). A server holding a cluster is refused unless `--overwrite`. The restored server keeps
its own configuration (localhost only) and does not archive into the repository. The report
(JSON: the recovery point, timeline, databases, tables) goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mastodon_data import plan
from mastodon_data.cli import host_ssh
from mastodon_data.cli.backups import BackupStack
from mastodon_data.config import ConfigError, Host
from mastodon_data.pulumi_cli import PulumiFailed, Stack


def target(stack: BackupStack, args: argparse.Namespace) -> Host:
    if args.address:
        return Host(args.address, "spare", args.address, args.address, args.ssh_user, args.port)
    host = stack.host(args.host)
    if host.role != "spare":
        raise ConfigError(
            f"{host.name} is this stack's {host.role}: restore onto a spare host (or a new "
            "server with --address)"
        )
    return host


def main(argv: list[str] | None = None, prog: str = "mastodon-data restore") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--cwd", type=Path, default=Path.cwd(), help="the Pulumi project")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="a spare host of the stack's hosts setting")
    where.add_argument("--address", help="any server the stack's ssh key reaches")
    parser.add_argument("--ssh-user", default="root")
    parser.add_argument("--port", type=int, default=22)
    parser.add_argument("--time", default="", help="recover to this time (with its zone)")
    parser.add_argument("--overwrite", action="store_true", help="replace a cluster there")
    args = parser.parse_args(argv)
    try:
        stack = BackupStack.read(Stack(args.stack, args.cwd))
        host = target(stack, args)
        step = plan.restore_step(
            stack.replication, stack.settings.backups, host, args.time, args.overwrite
        )
        report = stack.run(step)
    except (ConfigError, PulumiFailed, host_ssh.StepFailed, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"restored onto {host.name} ({report.get('target_time')}): timeline "
        f"{report.get('timeline')}, {report.get('recovery') or 'recovery ended'}",
        file=sys.stderr,
    )
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0
