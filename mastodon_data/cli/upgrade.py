"""Which side of a blue/green major upgrade Mastodon writes to, in one command (while the stack
has `upgradeFrom`): the setting `upgradeFrom.serve`, then `pulumi up`, whose run moves the
writes; and the old servers' retirement (docs/operators/major-upgrade.md).

    mastodon-data upgrade --stack prod old      # the rollback: back to the old servers
    mastodon-data upgrade --stack prod new      # and forward again
    mastodon-data upgrade --stack prod retire   # the old servers go (droplets: deleted)

The new outputs (JSON) go to stdout, so `| mastodon-data render-env` writes the new
.env.production; the run's summary (the stack output `upgrade`) goes to stderr.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mastodon_data import stack_config
from mastodon_data.cli.failover import run_and_report
from mastodon_data.config import PROJECT, UPGRADE_KEY, ConfigError, UpgradeSettings
from mastodon_data.pulumi_cli import Stack


def under_way(stack: Stack) -> UpgradeSettings:
    upgrade = stack_config.from_listing(stack.config_listing()).settings.upgrade
    if upgrade is None:
        raise ConfigError(
            f"stack {stack.name} has no upgrade under way ({PROJECT}:{UPGRADE_KEY} is not set): "
            "see docs/operators/major-upgrade.md to start one"
        )
    return upgrade


def serve(stack: Stack, side: str) -> dict:
    under_way(stack)
    stack.pulumi("config", "set", "--path", f"{PROJECT}:{UPGRADE_KEY}.serve", side)
    stack.up()
    return stack.outputs()["upgrade"]


def retire(stack: Stack) -> dict:
    """Two runs: the first lifts protectData from the old droplets (`retire`: refused while they
    take the writes), the second, without `upgradeFrom`, retires the old servers."""
    upgrade = under_way(stack)
    if upgrade.serve != "new":
        raise ConfigError(
            f"the old servers of stack {stack.name} still take Mastodon's writes: "
            f"`mastodon-data upgrade --stack {stack.name} new` first"
        )
    key = f"{PROJECT}:{UPGRADE_KEY}"
    stack.pulumi("config", "set", "--path", "--type", "bool", f"{key}.retire", "true")
    stack.up()
    stack.pulumi("config", "rm", key)
    stack.up()
    return {"retired": f"PostgreSQL {upgrade.postgres_version}"}


def main(argv: list[str] | None = None, prog: str = "mastodon-data upgrade") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--cwd", type=Path, default=Path.cwd(), help="the Pulumi project")
    parser.add_argument(
        "side", choices=("old", "new", "retire"),
        help="the servers Mastodon writes to, or retire: the old ones go",
    )  # fmt: skip
    args = parser.parse_args(argv)
    stack = Stack(args.stack, args.cwd)
    if args.side == "retire":
        return run_and_report(stack, lambda: retire(stack))
    return run_and_report(stack, lambda: serve(stack, args.side))
