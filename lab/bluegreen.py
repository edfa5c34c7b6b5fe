"""A blue/green major upgrade on a lab (issue 24), as tests/lab/test_upgrade_bluegreen.py and
`make bench-upgrade` drive it: a hosts-mode stack with a PostgreSQL 15 primary and a replica on
Debian 12 hosts (h1, h2, pools on), a second stack whose one host (h3, the Debian 13 image)
runs PostgreSQL 17, and `BlueGreen`, which runs the host steps of
mastodon_data/host/upgrade.py and of the switchover on them, as a later command will."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from lab import namespaces as lab_hosts
from lab.stack import LabStack
from mastodon_data import plan
from mastodon_data.cli import host_ssh
from mastodon_data.config import parse_settings
from mastodon_data.config.pooling import read_pool_name

DB = "mastodon_production"
POLL = 0.5  # seconds between two sync_state reports


def psql(lab: lab_hosts.Lab, host: lab_hosts.LabHost, version: int, statement: str,
         timeout: float = 120) -> str:  # fmt: skip
    """`statement` run as postgres on `host`'s PostgreSQL `version`; its output, unaligned."""
    command = f"runuser -u postgres -- /usr/lib/postgresql/{version}/bin/psql -XAt -d {DB}"
    argv = lab.ssh_command(host.address, command)
    result = subprocess.run(argv, input=statement, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{statement!r} on {host.name}: {result.stderr}")
    return result.stdout.strip()


def stack_up(name: str, config: dict, secrets: dict, workdir: Path) -> dict:
    """`pulumi up` of a new lab stack `name`: the stack, its outputs, secrets and settings."""
    stack = LabStack(name, workdir / name)
    stack.prepare()
    stack.configure(config, secrets)
    stack.up()
    return {
        "stack": stack, "outputs": stack.outputs(), "secrets": secrets,
        "settings": parse_settings(config, set(secrets)),
    }  # fmt: skip


def both_stacks(lab: lab_hosts.Lab, secrets: dict, workdir: Path) -> tuple[dict, Path]:
    """On `lab`'s three hosts (up): the old stack (15: h1 primary, h2 replica) and the new one
    (17 on h3), with one set of secrets, so Mastodon's role logs in on both sides alike; and
    the operator's key in a 0600 file under `workdir`."""
    old_config = lab_hosts.stack_config(lab, 1, 2)
    new_config = lab_hosts.stack_config(lab, 0, 3, sources_for=3)
    new_config |= {"hosts": new_config["hosts"][2:], "postgresVersion": 17}
    stacks = {
        "old": stack_up("bgold", old_config, secrets, workdir),
        "new": stack_up("bgnew", new_config, secrets, workdir),
    }
    key = workdir / "key"
    key.touch(mode=0o600)
    key.write_text(secrets["sshPrivateKey"])
    return stacks, key


class BlueGreen:
    """The servers of both stacks, each with its upgrade and switchover scripts serving."""

    def __init__(self, stacks: dict, key: Path):
        self.stacks, self.serving = stacks, {}
        # The shared connections' sockets beside a copy of the key in a short private directory
        # (the caller's may be too long for a Unix socket), closed and removed by close().
        self._private = ExitStack()
        key = self._private.enter_context(host_ssh.private_key(key.read_text()))
        self.hosts = {h.name: (s, h) for s in stacks.values() for h in s["settings"].hosts}

        def start(item):
            name, (_, host) = item
            host_ssh.connect(host, key, None)
            return name, {
                script: host_ssh.Serving(host, script, key, None)
                for script in ("upgrade", "switchover")
            }

        with ThreadPoolExecutor(max_workers=3) as pool:
            self.serving = dict(pool.map(start, self.hosts.items()))

    def close(self) -> None:
        for scripts in self.serving.values():
            for serving in scripts.values():
                serving.close()
        self._private.close()

    def upgrade(self, on: str, action: str, peer: str | None = None, **values) -> dict:
        stack, host = self.hosts[on]
        replication = stack["settings"].replication
        params = {
            "action": action, "postgres_version": replication.postgres_version, "port": 5432,
            "db_name": DB, "db_user": replication.db_user,
            "replication_user": replication.replication_user,
            "pgbouncer_port": 6432, "databases": [], "pause_wait": 10, "catch_up_wait": 30,
            "replication_password": stack["secrets"]["replicationPassword"],
            "db_password": stack["secrets"]["dbPassword"], **values,
        }  # fmt: skip
        if peer is not None:
            peer_stack, peer_host = self.hosts[peer]
            params |= {
                "peer_address": peer_host.private_address, "peer_port": 5432,
                "peer_ca_cert": peer_stack["outputs"]["postgres_ca_cert"],
                "replication_password": peer_stack["secrets"]["replicationPassword"],
            }  # fmt: skip
        return self.serving[on]["upgrade"].ask(params)

    def switchover(self, on: str, action: str, **values) -> dict:
        stack, host = self.hosts[on]
        step = plan.switchover_step(stack["settings"].replication, host, action, **values)
        return self.serving[on]["switchover"].ask(step.params)

    def cut_over(self, old: str, new: str, pools: tuple[str, ...]) -> dict:
        """Writes move from `old` to `new`: the pools of `pools` pause DB_NAME (and the old
        server its read pool, whose sessions the fence ends), the old server stops taking
        Mastodon's writes, the new one applies all it had and takes its sequences, the
        subscription turns around, the pools send DB_NAME to `new` and resume."""
        behind = self.upgrade(new, "sync_state", peer=old)["lag_bytes"]
        marks = {"start": time.monotonic()}
        read_pool = read_pool_name(DB)
        with ThreadPoolExecutor(max_workers=len(pools)) as pool:
            list(pool.map(lambda h: self.switchover(h, "pause", databases=(DB,)), pools))
        self.switchover(old, "pause", databases=(read_pool,))
        marks["paused"] = time.monotonic()
        self.upgrade(old, "read_only")
        caught = self.upgrade(new, "catch_up", peer=old)
        sequences = self.upgrade(new, "sequences", peer=old)
        marks["caught_up"] = time.monotonic()
        self.upgrade(new, "detach", peer=old)
        self.upgrade(old, "reverse", peer=new)
        self.upgrade(new, "writable")
        marks["reversed"] = time.monotonic()
        new_stack, new_host = self.hosts[new]
        ca = new_stack["outputs"]["postgres_ca_cert"]

        def repoint(h: str) -> dict:
            return self.switchover(
                h, "repoint", databases=(DB,), new_primary_address=new_host.private_address,
                new_primary_cert=ca,
            )  # fmt: skip

        with ThreadPoolExecutor(max_workers=len(pools)) as pool:
            list(pool.map(repoint, pools))
        self.switchover(old, "resume", databases=(read_pool,))
        marks["resumed"] = time.monotonic()
        times = list(marks.values())
        names = ("pause", "catch_up_and_sequences", "turn_around", "repoint_and_resume")
        spans = zip(names, times[:-1], times[1:], strict=True)
        return {
            **{f"{name}_s": round(end - begin, 3) for name, begin, end in spans},
            "paused_s": round(marks["resumed"] - marks["start"], 3),
            "catch_up_s": caught.get("catch_up_s", 0.0),
            "lag_bytes_before": behind,
            "sequences_set": sequences["sequences_set"],
        }

    def sync_times(self, on: str, peer: str, limit: float) -> dict:
        """Polls `on`'s subscription to `peer` for at most `limit` seconds: when every table
        was ready (its initial copy done) and when it was in sync (ready, lag under 1 MiB)."""
        start, ready = time.monotonic(), None
        while time.monotonic() - start < limit:
            state = self.upgrade(on, "sync_state", peer=peer)
            now = time.monotonic() - start
            if ready is None and state["tables"] and not state["not_ready"]:
                ready = now
            if state["in_sync"]:
                return {"ready_s": round(ready, 2), "in_sync_s": round(now, 2),
                        "lag_bytes": state["lag_bytes"]}  # fmt: skip
            time.sleep(POLL)
        raise AssertionError(f"{on}'s subscription to {peer} not in sync within {limit} s")

    def in_sync(self, on: str, peer: str, limit: float) -> float:
        return self.sync_times(on, peer, limit)["in_sync_s"]
