"""Switchover: a planned change of the primary that Mastodon's clients see as a pause, not as
errors (droplets and hosts mode, with PgBouncer).

    # hosts mode: mlab-h2 becomes the primary, the old primary its replica
    mastodon-data switchover --stack prod mlab-h2
    # droplets mode: db-1 becomes the primary (primaryNode 1)
    mastodon-data switchover --stack dev db-1

The other servers' PgBouncers pause DB_NAME, then the old primary's both pools (transactions
in flight finish, new ones wait) and it shuts down cleanly (its last WAL reaches the
replicas); the target replays all of it (at most --catch-up-wait seconds; else the old primary
starts again, the pools resume, nothing changed) and is promoted, every PgBouncer sends DB_NAME
to it and resumes. The old primary restarts as a standby (pg_rewind only where its data went past
the new primary's), then `pulumi up` of the new order (the hosts' order, or primaryNode)
repoints the other replicas and leaves the stack as `failover` would. The new outputs (JSON)
go to stdout, so `| mastodon-data render-env` writes the new .env.production; a summary goes
to stderr. A run that stopped half-way is finished by running it again.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mastodon_data import plan, stack_config
from mastodon_data.cli import host_ssh
from mastodon_data.cli.failover import droplet_hosts, reordered, run_and_report
from mastodon_data.config import HOSTS_KEY, RESEED_KEY, ConfigError, Host
from mastodon_data.config.pooling import read_pool_name
from mastodon_data.pulumi_cli import Stack
from mastodon_data.stack_config import StackConfig

CATCH_UP_WAIT = 30  # seconds the target may take to replay the old primary's last WAL


class Switch:
    """The servers and the ssh key of one switchover; `act` runs one of its steps."""

    def __init__(self, loaded: StackConfig, servers: list[Host], target: str, key: Path, known):
        self.replication = loaded.settings.replication
        self.key, self.known_hosts = key, known
        self.old = next(h for h in servers if h.role == "primary")
        self.target = next((h for h in servers if h.role == "replica" and h.name == target), None)
        if self.target is None:
            names = [h.name for h in servers if h.role == "replica"]
            raise ConfigError(f"{target} is not a replica of this stack (replicas: {names})")
        self.servers = servers
        self.write_pool = self.replication.db_name
        self.read_pool = read_pool_name(self.replication.db_name)

        self.serving: dict[str, host_ssh.Serving] = {}

    def act(self, host: Host, action: str, **values) -> dict:
        """One action on `host`, by its switchover script (Switch.connect)."""
        step = plan.switchover_step(self.replication, host, action, **values)
        return self.serving[host.name].ask(step.params)

    def run_step(self, step: plan.Step) -> dict:
        """`step` over the host's shared connection."""
        out = host_ssh.run_step(step, {}, self.key, self.known_hosts, shared=True)
        return plan.parse_report(out)

    def connect(self) -> None:
        """Before anything pauses: a shared ssh connection to every server, and its switchover
        script running there, ready for the steps."""

        def ready(host: Host) -> host_ssh.Serving:
            host_ssh.connect(host, self.key, self.known_hosts)
            return host_ssh.Serving(host, "switchover", self.key, self.known_hosts)

        with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
            started = list(pool.map(ready, self.servers))
        self.serving = {host.name: s for host, s in zip(self.servers, started, strict=True)}

    def close(self) -> None:
        for serving in self.serving.values():
            serving.close()

    def on_every_server(self, action: str, servers: list[Host] | None = None, **values) -> None:
        """`action` on the write pool of all servers (or `servers`) at once."""

        def one(host: Host) -> dict:
            return self.act(host, action, databases=(self.write_pool,), **values)

        hosts = self.servers if servers is None else servers
        with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
            list(pool.map(one, hosts))

    def fence_and_take_over(self, wait: int) -> dict:
        """The old primary stopped cleanly, the target past its last WAL and promoted. If the
        target does not catch up, the old primary runs again and the pools resume."""
        try:  # its pools too, then it stops: paused from here for the env's clients
            fenced = self.act(self.old, "fence", databases=(self.write_pool, self.read_pool))
        except host_ssh.StepFailed:
            self.undo({})
            raise
        taken = self.act(
            self.target, "take_over", checkpoint=fenced.get("checkpoint", "0/0"),
            catch_up_wait=wait,
        )  # fmt: skip
        if taken["caught_up"]:
            return taken
        self.undo(fenced)
        raise host_ssh.StepFailed(
            f"{self.target.name} replayed up to {taken['replayed'] or 'nothing'}, not past the "
            f"old primary's last checkpoint {fenced.get('checkpoint')}, within {wait} s: the "
            f"switchover was undone ({self.old.name} is the primary, the pools resumed)"
        )

    def undo(self, fenced: dict) -> None:
        """Nothing was promoted: the old primary runs (again) and every pool resumes."""
        if fenced.get("state") != "standby":
            self.act(self.old, "unfence")
        self.act(self.old, "resume", databases=(self.read_pool,))
        self.on_every_server("resume")

    def run(self, wait: int) -> dict:
        """Pause the other servers' pools; pause the old primary's and fence it; catch up and
        promote; repoint and resume; then the old primary a standby. Returns the timings and
        whether the old primary needs a rewind."""
        self.connect()
        marks = [time.monotonic()]
        self.on_every_server("pause", [h for h in self.servers if h is not self.old])
        marks.append(time.monotonic())
        taken = self.fence_and_take_over(wait)
        marks.append(time.monotonic())
        self.on_every_server(
            "repoint", new_primary_address=self.target.private_address,
            new_primary_cert=taken["server_cert"],
        )  # fmt: skip
        marks.append(time.monotonic())
        # After the pause: the promoted server's upstream settings cleared, its timeline.
        promoted = self.run_step(plan.promote_step(self.replication, self.target))
        demoted = self.act(
            self.old, "demote", replayed=taken["replayed"], databases=(self.read_pool,)
        )
        if demoted["rewind"]:  # its read pool serves again once the replica step rewound it
            self.act(self.old, "resume", databases=(self.read_pool,))
        phases = ("pause_others", "fence_and_take_over", "repoint_and_resume")
        return {
            "switched_to": self.target.name,
            "old_primary": self.old.name,
            "paused_s": round(marks[-1] - marks[0], 2),
            **{
                f"{name}_s": round(end - begin, 2)
                for name, begin, end in zip(phases, marks[:-1], marks[1:], strict=True)
            },
            "catch_up_s": taken.get("catch_up_s", 0.0),
            "timeline": promoted["timeline"],
            "rewind": demoted["rewind"],
        }


def servers_of(stack: Stack, loaded: StackConfig) -> list[Host]:
    settings = loaded.settings
    if settings.mode == "droplets":
        return droplet_hosts(stack.outputs(), settings.droplets.ssh_user)
    return [h for h in settings.hosts if h.role != "spare"]


def new_order(loaded: StackConfig, switch: Switch) -> dict:
    """The stack's configuration after the switch: the target first (hosts) or primaryNode."""
    if loaded.settings.mode == "droplets":
        return {"primaryNode": int(switch.target.name.removeprefix("db-"))}
    others = [h.name for h in switch.servers if h.role == "replica" and h is not switch.target]
    first = [switch.target.name, *others, switch.old.name]
    return {"hosts": reordered(loaded.values[HOSTS_KEY], first), "replicaCount": len(first) - 1}


def switchover(stack: Stack, loaded: StackConfig, target: str, known_hosts, wait: int) -> dict:
    if loaded.settings.replication.pool is None:
        raise ConfigError(
            "a switchover pauses PgBouncer's pools: turn them on (pulumi config set "
            "mastodon-data:pgbouncer true; pulumi up), or use `mastodon-data failover`"
        )
    with host_ssh.private_key(loaded.secrets["sshPrivateKey"]) as key:
        switch = Switch(loaded, servers_of(stack, loaded), target, key, known_hosts)
        try:
            summary = switch.run(wait)
        finally:
            switch.close()
    start = time.monotonic()
    rewind = {RESEED_KEY: [switch.old.name]} if summary["rewind"] else {}
    stack.set_plain({**new_order(loaded, switch), **rewind})
    stack.up()
    if rewind:
        stack.remove(RESEED_KEY)  # a re-seed is asked for once
        stack.up()
    return {**summary, "up_s": round(time.monotonic() - start, 2)}


def main(argv: list[str] | None = None, prog: str = "mastodon-data switchover") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--cwd", type=Path, default=Path.cwd(), help="the Pulumi project")
    parser.add_argument("name", help="the replica that becomes the primary")
    parser.add_argument(
        "--catch-up-wait", type=int, default=CATCH_UP_WAIT,
        help=f"seconds the target may take to replay the old primary's last WAL "
        f"(default {CATCH_UP_WAIT}); past it the switchover is undone",
    )  # fmt: skip
    host_ssh.add_known_hosts_option(parser)
    args = parser.parse_args(argv)
    stack = Stack(args.stack, args.cwd)

    def change() -> dict:
        loaded = stack_config.from_listing(stack.config_listing())
        if loaded.settings.mode == "managed":
            raise ConfigError(
                "managed mode has no switchover here: DigitalOcean moves the primary itself "
                "(a resize or maintenance fails over to its standby)"
            )
        return switchover(stack, loaded, args.name, args.known_hosts, args.catch_up_wait)

    return run_and_report(stack, change)
