"""Backups of a droplets or hosts stack, by hand: a backup now, or a health check (`pgbackrest
check` and `info` on the primary, over ssh with the stack's key; during a blue/green upgrade,
the old primary, where the backups stay until the old servers retire).

    mastodon-data backups --stack prod now [--type full|diff|incr]
    mastodon-data backups --stack prod check    # exit 1 when unhealthy

Run it where `pulumi up` of the stack runs (`--cwd` for another project directory). The
report (JSON) goes to stdout, one line of summary to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mastodon_data import plan, stack_config
from mastodon_data.cli import host_ssh
from mastodon_data.config import (
    BACKUP_PASSPHRASE_KEY,
    BACKUP_SECRET_KEY,
    ConfigError,
    Host,
    ReplicationSettings,
    Settings,
)
from mastodon_data.pulumi_cli import PulumiFailed, Stack


@dataclass(frozen=True)
class BackupStack:
    """A stack's settings and what its backup scripts need: the repository's key (from the
    stack output `backup_key`), the passphrase and the ssh key (from its configuration), the
    primary the backups run on and its settings: during a blue/green upgrade, the old
    generation's (docs/operators/major-upgrade.md)."""

    settings: Settings
    secrets: dict[str, str]
    primary: Host
    replication: ReplicationSettings

    @classmethod
    def read(cls, stack: Stack) -> BackupStack:
        loaded = stack_config.from_listing(stack.config_listing())
        settings = loaded.settings
        if settings.backups is None:
            raise ConfigError("backups are off in this stack (mastodon-data:backups)")
        outputs = stack.outputs()
        key = outputs.get("backup_key")
        if not key:
            raise ConfigError("the stack has no backup_key output yet: run `pulumi up` first")
        secrets = {
            "sshPrivateKey": loaded.secrets["sshPrivateKey"],
            BACKUP_PASSPHRASE_KEY: loaded.secrets[BACKUP_PASSPHRASE_KEY],
            "backupAccessKeyId": key["access_key_id"],
            BACKUP_SECRET_KEY: key["secret_access_key"],
        }
        replication, upgrade = settings.replication, settings.upgrade
        hosts = upgrade.hosts if upgrade else settings.hosts
        primary = next((h for h in hosts if h.role == "primary"), None)
        if primary is None:  # droplets: the addresses are the stack's outputs
            address = outputs["backup_primary" if upgrade else "primary"]
            primary = Host(
                address["name"],
                "primary",
                address["public_address"],
                address["private_address"],
                settings.droplets.ssh_user,
            )
        if upgrade:
            replication = dataclasses.replace(
                replication, postgres_version=upgrade.postgres_version
            )
        return cls(settings, secrets, primary, replication)

    def host(self, name: str) -> Host:
        """A host of the stack's `hosts` setting (spares included) by name."""
        found = next((h for h in self.settings.hosts if h.name == name), None)
        if found is None:
            names = [h.name for h in self.settings.hosts]
            raise ConfigError(f"no host {name!r} in this stack's hosts ({names})")
        return found

    def run(self, step: plan.Step) -> dict:
        with private_key(self.secrets["sshPrivateKey"]) as key:
            return plan.parse_report(host_ssh.run_step(step, self.secrets, key, None))


@contextmanager
def private_key(text: str):
    with tempfile.TemporaryDirectory() as private:
        key = Path(private) / "key"
        key.touch(mode=0o600)
        key.write_text(text.rstrip("\n") + "\n")
        yield key


def summary_line(report: dict) -> str:
    last = report.get("last_backup") or {}
    if report.get("action") == "backup":
        return f"backup {last.get('label', '?')} ({report['type']}) taken in {report['seconds']} s"
    archive = report.get("archive") or {}
    return (
        f"check {report.get('check', '-')}; last backup {last.get('label', 'none')} "
        f"({last.get('type', '-')}); archive lag {archive.get('lag_bytes', '-')} B / "
        f"{archive.get('lag_seconds', '-')} s; failed archives {archive.get('failed_count', '-')}"
    )


def main(argv: list[str] | None = None, prog: str = "mastodon-data backups") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--cwd", type=Path, default=Path.cwd(), help="the Pulumi project")
    parser.add_argument("action", choices=["now", "check"])
    parser.add_argument("--type", choices=["full", "diff", "incr"], default="full")
    args = parser.parse_args(argv)
    try:
        stack = BackupStack.read(Stack(args.stack, args.cwd))
        replication, backups = stack.replication, stack.settings.backups
        if args.action == "now":
            step = plan.backup_now_step(replication, backups, stack.primary, args.type)
        else:
            step = plan.backup_check_step(replication, backups, stack.primary)
        report = stack.run(step)
    except (ConfigError, PulumiFailed, host_ssh.StepFailed, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary_line(report), file=sys.stderr)
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0 if args.action == "now" or report.get("healthy") else 1
