"""The operator's command, `mastodon-data <command> [options]` (installed into the venv):

    render-env          stack outputs on stdin -> .env.production (or another file)
    check-replication   role, lag and connections of every database host; exit 1 if unhealthy
    failover            promote a replica / rejoin a former primary (hosts mode)
    switchover          a planned change of the primary: the pools pause, nothing fails
    upgrade             blue/green major upgrade: Mastodon's writes to the old or new servers
    grant               managed mode, once: let Mastodon's role create its tables
    backups             a backup now, or check the backups (pgbackrest check and info)
    restore             restore the backups onto a chosen host, latest or a point in time

Each command keeps its own options (`mastodon-data <command> --help`) and exit codes.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module of mastodon_data.cli with its main(argv), one line of help)
COMMANDS = {
    "render-env": ("render_env", "stack outputs (stdin) -> .env.production"),
    "check-replication": ("check_replication", "replication health from the stack outputs"),
    "failover": ("failover", "promote a replica, or rejoin a former primary (hosts mode)"),
    "switchover": ("switchover", "a planned change of the primary: a pause, not errors"),
    "upgrade": ("upgrade", "blue/green upgrade: writes to the old or the new servers"),
    "grant": ("grant", "managed mode: let Mastodon's role create its tables"),
    "backups": ("backups", "a backup now, or check the backups (droplets, hosts)"),
    "restore": ("restore", "restore the backups onto a chosen host and verify it"),
}


def usage() -> str:
    lines = [f"  {name:18} {text}" for name, (_, text) in COMMANDS.items()]
    return "usage: mastodon-data <command> [options]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
    if not argv or argv[0] not in COMMANDS:
        problem = f"unknown command {argv[0]!r}" if argv else "no command given"
        print(f"mastodon-data: {problem}\n{usage()}", file=sys.stderr)
        return 2
    # Imported on demand: render-env needs no database driver, for instance.
    module = importlib.import_module(f"mastodon_data.cli.{COMMANDS[argv[0]][0]}")
    return module.main(argv[1:], prog=f"mastodon-data {argv[0]}")
