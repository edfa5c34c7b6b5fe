"""Which side of a blue/green major upgrade Mastodon writes to, in one command (hosts mode,
while the stack has `upgradeFrom`): the setting `upgradeFrom.serve`, then `pulumi up`, whose
run moves the writes (docs/operators/major-upgrade.md).

    mastodon-data upgrade --stack prod old    # the rollback: back to the old servers
    mastodon-data upgrade --stack prod new    # and forward again

The new outputs (JSON) go to stdout, so `| mastodon-data render-env` writes the new
.env.production; the run's summary (the stack output `upgrade`) goes to stderr.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mastodon_data import stack_config
from mastodon_data.cli.failover import run_and_report
from mastodon_data.config import PROJECT, UPGRADE_KEY, ConfigError
from mastodon_data.pulumi_cli import Stack


def serve(stack: Stack, side: str) -> dict:
    loaded = stack_config.from_listing(stack.config_listing())
    if loaded.settings.upgrade is None:
        raise ConfigError(
            f"stack {stack.name} has no upgrade under way ({PROJECT}:{UPGRADE_KEY} is not set): "
            "see docs/operators/major-upgrade.md to start one"
        )
    stack.pulumi("config", "set", "--path", f"{PROJECT}:{UPGRADE_KEY}.serve", side)
    stack.up()
    return stack.outputs()["upgrade"]


def main(argv: list[str] | None = None, prog: str = "mastodon-data upgrade") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--cwd", type=Path, default=Path.cwd(), help="the Pulumi project")
    parser.add_argument("side", choices=("old", "new"), help="the servers Mastodon writes to")
    args = parser.parse_args(argv)
    stack = Stack(args.stack, args.cwd)
    return run_and_report(stack, lambda: serve(stack, args.side))
