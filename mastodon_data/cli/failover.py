"""Failover: promote a replica, then let `pulumi up` repoint the others; the failed primary
comes back as a replica (pg_rewind, or a fresh clone when a rewind is impossible).

    # hosts mode, the primary is lost: promote mlab-h2; the stack's hosts are reordered, applied
    mastodon-data failover --stack prod promote mlab-h2
    # hosts mode, the old primary is back: rewind it onto the new primary as a replica
    mastodon-data failover --stack prod rejoin mlab-h1
    # droplets mode: promote db-1; primaryNode becomes 1 and the old primary (db-0) is rewound
    # as a replica in the same run (nothing is renamed or replaced)
    mastodon-data failover --stack dev promote db-1

Run it where `pulumi up` of the stack runs (`--cwd` for another project directory). The promote
script runs over ssh with the stack's key; with pools, every server's PgBouncer then sends
DB_NAME to the promoted server at once (writes need not wait for the rest); everything after it
is `pulumi up` of the same program with the new order. The new outputs (JSON, as `pulumi stack
output --json --show-secrets`) go to stdout, so `| mastodon-data render-env` writes the new
.env.production; a summary goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mastodon_data import plan, stack_config
from mastodon_data.cli import host_ssh
from mastodon_data.config import HOSTS_KEY, RESEED_KEY, ConfigError, Host
from mastodon_data.pulumi_cli import PulumiFailed, Stack
from mastodon_data.stack_config import StackConfig


def reordered(hosts: list[dict], first: list[str]) -> list[dict]:
    """`hosts` with `first` leading (primary, then replicas), the others after them."""
    by_name = {h["name"]: h for h in hosts}
    return [by_name[n] for n in first] + [h for h in hosts if h["name"] not in first]


def promote_over_ssh(
    loaded: StackConfig, target: Host, servers: list[Host], known_hosts: Path | None = None
) -> tuple[dict, float]:
    """Promotes `target`; with pools, every server's PgBouncer then sends DB_NAME to it, by the
    switchover scripts started on every server while the promotion runs."""
    pooled = loaded.settings.replication.pool is not None
    with host_ssh.private_key(loaded.secrets["sshPrivateKey"]) as key, ThreadPoolExecutor(1) as bg:
        start = time.monotonic()
        serving = bg.submit(start_serving, servers if pooled else [], key, known_hosts)
        step = plan.promote_step(loaded.settings.replication, target)
        try:
            report = plan.parse_report(host_ssh.run_step(step, {}, key, known_hosts))
        except host_ssh.StepFailed:
            for script in serving.result():  # nothing to repoint: they end
                if not isinstance(script, str):
                    script.close()
            raise
        scripts = serving.result()
        seconds = round(time.monotonic() - start, 2)
        if pooled:
            promoted = {"address": target.private_address, "server_cert": report["server_cert"]}
            for problem in repoint_pools(loaded, scripts, promoted):
                print(f"warning: {problem} (pulumi up sets that pool)", file=sys.stderr)
            report["pools_repointed_s"] = round(time.monotonic() - start, 2)
    report.pop("server_cert", None)
    return report, seconds


def start_serving(servers: list[Host], key: Path, known_hosts) -> list[host_ssh.Serving | str]:
    """The switchover script running on each server (in parallel), or why it is not (the dead
    primary's host may be unreachable)."""

    def start(host: Host) -> host_ssh.Serving | str:
        try:
            return host_ssh.Serving(host, "switchover", key, known_hosts)
        except host_ssh.StepFailed as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
        return list(pool.map(start, servers))


def repoint_pools(
    loaded: StackConfig, scripts: list[host_ssh.Serving | str], promoted: dict
) -> list[str]:
    """After a failover's promotion: every server's PgBouncer sends DB_NAME to the promoted
    one at once, before `pulumi up` (the first writes need not wait for it); the scripts end.
    Returns what failed; `pulumi up` sets the pools anyway."""
    replication = loaded.settings.replication
    values = {
        "databases": (replication.db_name,),
        "new_primary_address": promoted["address"],
        "new_primary_cert": promoted["server_cert"],
    }

    def one(script: host_ssh.Serving | str) -> str | None:
        if isinstance(script, str):
            return script
        try:
            script.ask(plan.switchover_step(replication, script.host, "repoint", **values).params)
        except host_ssh.StepFailed as exc:
            return str(exc)
        finally:
            script.close()
        return None

    with ThreadPoolExecutor(max_workers=max(1, len(scripts))) as pool:
        return [problem for problem in pool.map(one, scripts) if problem]


def droplet_hosts(outputs: dict, ssh_user: str) -> list[Host]:
    """The database droplets as the stack's outputs describe them (droplets mode)."""
    servers = [(outputs["primary"], "primary")]
    servers += [(r, "replica") for r in outputs.get("replicas", [])]
    return [
        Host(s["name"], role, s["public_address"], s["private_address"], ssh_user)
        for s, role in servers
    ]


def promote_droplet(stack: Stack, name: str, loaded: StackConfig, known_hosts: Path | None) -> dict:
    """Droplets mode: the droplets keep their names (db-N); primaryNode says which is the
    primary. The old primary is rewound as a replica in the same run, then the one-time
    re-seed switch is removed again."""
    settings = loaded.settings
    hosts = droplet_hosts(stack.outputs(), settings.droplets.ssh_user)
    old = next(h for h in hosts if h.role == "primary")
    target = next((h for h in hosts if h.role == "replica" and h.name == name), None)
    if target is None:
        names = [h.name for h in hosts if h.role == "replica"]
        raise ConfigError(f"{name} is not a replica of this stack (replicas: {names})")
    report, seconds = promote_over_ssh(loaded, target, hosts, known_hosts)
    position = int(name.removeprefix("db-"))
    stack.set_plain({"primaryNode": position, RESEED_KEY: [old.name]})
    start = time.monotonic()
    stack.up()
    rejoined = stack.step_reports().get(f"replica-{old.name}", {})
    stack.remove(RESEED_KEY)  # a re-seed is asked for once
    stack.up()
    return {"promoted": name, "primary_node": position, "promote_s": seconds, **report,
            "rejoined": old.name, "changed": rejoined.get("changed", []),
            "up_s": _since(start)}  # fmt: skip


def promote(stack: Stack, name: str, loaded: StackConfig, known_hosts: Path | None = None) -> dict:
    settings = loaded.settings
    replicas = [h for h in settings.hosts if h.role == "replica"]
    target = next((h for h in replicas if h.name == name), None)
    if target is None:
        names = [h.name for h in replicas]
        raise ConfigError(f"{name} is not a replica of this stack (replicas: {names})")
    servers = [h for h in settings.hosts if h.role != "spare"]
    report, seconds = promote_over_ssh(loaded, target, servers, known_hosts)
    survivors = [h.name for h in replicas if h.name != name]
    # The old primary becomes a spare: it rejoins only when the operator asks (`rejoin`).
    stack.set_plain(
        {
            "hosts": reordered(loaded.values[HOSTS_KEY], [name, *survivors]),
            "replicaCount": len(survivors),
        }
    )
    start = time.monotonic()
    stack.up()
    return {"promoted": name, "promote_s": seconds, **report, "up_s": _since(start)}


def rejoin(stack: Stack, name: str, loaded: StackConfig) -> dict:
    names = [h.name for h in loaded.settings.hosts if h.role != "spare"]
    if name in names:
        raise ConfigError(f"{name} is already the primary or a replica of this stack")
    stack.set_plain(
        {
            "hosts": reordered(loaded.values[HOSTS_KEY], [*names, name]),
            "replicaCount": len(names),
            RESEED_KEY: [name],
        }
    )
    start = time.monotonic()
    stack.up()
    report = stack.step_reports()[f"replica-{name}"]
    stack.remove(RESEED_KEY)  # a re-seed is asked for once
    stack.up()
    return {"rejoined": name, "changed": report.get("changed", []), "up_s": _since(start)}


def _since(start: float) -> float:
    return round(time.monotonic() - start, 2)


def main(argv: list[str] | None = None, prog: str = "mastodon-data failover") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--cwd", type=Path, default=Path.cwd(), help="the Pulumi project")
    parser.add_argument("action", choices=["promote", "rejoin"])
    parser.add_argument("name", help="the replica to promote, or the old primary to rejoin")
    host_ssh.add_known_hosts_option(parser)
    args = parser.parse_args(argv)
    stack = Stack(args.stack, args.cwd)

    def change() -> dict:
        loaded = stack_config.from_listing(stack.config_listing())
        mode = loaded.settings.mode
        if mode == "managed":
            raise ConfigError("managed mode fails over on its own (DigitalOcean's standby)")
        if mode == "droplets":
            if args.action != "promote":
                raise ConfigError("droplets mode rejoins the old primary in `promote` itself")
            return promote_droplet(stack, args.name, loaded, args.known_hosts)
        if args.action == "promote":
            return promote(stack, args.name, loaded, args.known_hosts)
        return rejoin(stack, args.name, loaded)

    return run_and_report(stack, change)


def run_and_report(stack: Stack, change: Callable[[], dict]) -> int:
    """Runs a change of primary: its summary to stderr, then the stack's outputs to stdout (what
    a deploy pipeline reads); an error is one line naming what to fix, exit 1."""
    try:
        summary = change()
        outputs = stack.outputs()
    except (ConfigError, PulumiFailed, host_ssh.StepFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2), file=sys.stderr)
    print(json.dumps(outputs, indent=2, sort_keys=True))
    return 0
