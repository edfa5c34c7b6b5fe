"""The operator's side of a blue/green major upgrade: the steps of host/upgrade.py and of the
switchover's pause, run over ssh in their order on the servers of both generations (the old
version's and the new one's). `publish` pauses every pool that sends writes to the publisher
around its wal_level restart; `cut_over` moves writes from one primary to the other inside one
pause, and undoes itself (the old primary writable, the pools resumed) when the new side does
not catch up; `sync_times` waits for a subscription to be in sync."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

from mastodon_data import plan
from mastodon_data.cli import host_ssh
from mastodon_data.config import Host, ReplicationSettings
from mastodon_data.config.pooling import read_pool_name

POLL = 0.5  # seconds between two sync_state reports
PAUSE_WAIT = 10  # seconds a PgBouncer PAUSE may wait for its transactions in flight
CATCH_UP_WAIT = 30  # seconds the new side may take to confirm the old side's last WAL


@dataclass(frozen=True)
class Generation:
    """One side of the upgrade: its settings, servers (the primary first), the CA its primary's
    certificate is signed by, and its secrets (Mastodon's and the replication role's)."""

    replication: ReplicationSettings
    hosts: tuple[Host, ...]
    ca_cert: str
    db_password: str
    replication_password: str


class BlueGreen:
    """The servers of every generation, each with its upgrade and switchover scripts serving
    over a shared ssh connection; close() ends them and removes the key's copy."""

    def __init__(self, generations: dict[str, Generation], key_text: str, known_hosts=None):
        self.generations, self.serving = generations, {}
        self._private = ExitStack()
        key = self._private.enter_context(host_ssh.private_key(key_text))
        self.hosts = {h.name: (g, h) for g in generations.values() for h in g.hosts}

        def start(item):
            name, (_, host) = item
            host_ssh.connect(host, key, known_hosts)
            scripts = ("upgrade", "switchover")
            return name, {s: host_ssh.Serving(host, s, key, known_hosts) for s in scripts}

        try:
            with ThreadPoolExecutor(max_workers=min(4, len(self.hosts))) as pool:
                self.serving = dict(pool.map(start, self.hosts.items()))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for scripts in self.serving.values():
            for serving in scripts.values():
                serving.close()
        self._private.close()

    def upgrade(self, on: str, action: str, peer: str | None = None, **values) -> dict:
        """One step of host/upgrade.py on server `on` (its peer: `peer`'s primary side)."""
        generation, _ = self.hosts[on]
        replication = generation.replication
        params = {
            "action": action, "postgres_version": replication.postgres_version,
            "port": replication.port, "db_name": replication.db_name,
            "db_user": replication.db_user, "replication_user": replication.replication_user,
            "pgbouncer_port": replication.pool.pgbouncer_port if replication.pool else 0,
            "databases": [], "pause_wait": PAUSE_WAIT, "catch_up_wait": CATCH_UP_WAIT,
            "replication_password": generation.replication_password,
            "db_password": generation.db_password, **values,
        }  # fmt: skip
        if peer is not None:
            peer_generation, peer_host = self.hosts[peer]
            params |= {
                "peer_address": peer_host.private_address,
                "peer_port": peer_generation.replication.port,
                "peer_ca_cert": peer_generation.ca_cert,
                "replication_password": peer_generation.replication_password,
            }
        return self.serving[on]["upgrade"].ask(params)

    def switchover(self, on: str, action: str, **values) -> dict:
        generation, host = self.hosts[on]
        step = plan.switchover_step(generation.replication, host, action, **values)
        return self.serving[on]["switchover"].ask(step.params)

    def on_pools(self, names, action: str, **values) -> None:
        """`action` on the write pool of the servers `names`, all at once."""
        names = list(names)
        if not names:
            return
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            list(pool.map(lambda h: self.switchover(h, action, **values), names))

    def publish(self, on: str, peer: str) -> dict:
        """`on` publishes for `peer`. Its wal_level restart pauses its own pools (the step) and
        the write pool of every other server of its generation (they send writes to it)."""
        generation, _ = self.hosts[on]
        replication = generation.replication
        restarts = self.upgrade(on, "wal_level")["wal_level"] != "logical"
        if replication.pool is None or not restarts:
            return self.upgrade(on, "publish", peer=peer)
        db = replication.db_name
        others = [h.name for h in generation.hosts if h.name != on]
        self.on_pools(others, "pause", databases=(db,))
        try:
            return self.upgrade(on, "publish", peer=peer, databases=[db, read_pool_name(db)])
        finally:
            self.on_pools(others, "resume", databases=(db,))

    def cut_over(
        self, old: str, new: str, pools: tuple[str, ...], catch_up_wait: int = CATCH_UP_WAIT
    ) -> dict:
        """Writes move from `old` to `new`: the pools of `pools` pause DB_NAME (and the old
        server its read pool, whose sessions the fence ends), the old server stops taking
        Mastodon's writes, the new one applies all it had and takes its sequences, the
        subscription turns around, the pools send DB_NAME to `new` and resume. If the new side
        does not catch up, the old server takes writes again and the pools resume."""
        db = self.hosts[old][0].replication.db_name
        read_pool = read_pool_name(db)
        behind = self.upgrade(new, "sync_state", peer=old)["lag_bytes"]
        marks = {"start": time.monotonic()}
        self.on_pools(pools, "pause", databases=(db,))
        self.switchover(old, "pause", databases=(read_pool,))
        marks["paused"] = time.monotonic()
        try:
            self.upgrade(old, "read_only")
            caught = self.upgrade(new, "catch_up", peer=old, catch_up_wait=catch_up_wait)
        except host_ssh.StepFailed as failed:
            self.upgrade(old, "writable")
            self.switchover(old, "resume", databases=(read_pool,))
            self.on_pools(pools, "resume", databases=(db,))
            raise host_ssh.StepFailed(
                f"the cut-over from {old} to {new} was undone ({old} takes Mastodon's writes "
                f"again, the pools resumed): {failed}"
            ) from failed
        sequences = self.upgrade(new, "sequences", peer=old)
        marks["caught_up"] = time.monotonic()
        self.upgrade(new, "detach", peer=old)
        self.upgrade(old, "reverse", peer=new)
        self.upgrade(new, "writable")
        marks["reversed"] = time.monotonic()
        new_generation, new_host = self.hosts[new]
        self.on_pools(
            pools, "repoint", databases=(db,), new_primary_address=new_host.private_address,
            new_primary_cert=new_generation.ca_cert,
        )  # fmt: skip
        self.switchover(old, "resume", databases=(read_pool,))
        marks["resumed"] = time.monotonic()
        return cut_over_report(marks, caught, behind, sequences["sequences_set"])

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
        raise host_ssh.StepFailed(
            f"{on}'s subscription to {peer} not in sync within {limit} s (tables not ready: "
            f"{', '.join(state['not_ready']) or 'none'}; lag {state['lag_bytes']} bytes)"
        )

    def in_sync(self, on: str, peer: str, limit: float) -> float:
        return self.sync_times(on, peer, limit)["in_sync_s"]


def cut_over_report(marks: dict, caught: dict, behind, sequences_set: int) -> dict:
    times = list(marks.values())
    names = ("pause", "catch_up_and_sequences", "turn_around", "repoint_and_resume")
    spans = zip(names, times[:-1], times[1:], strict=True)
    return {
        **{f"{name}_s": round(end - begin, 3) for name, begin, end in spans},
        "paused_s": round(marks["resumed"] - marks["start"], 3),
        "catch_up_s": caught.get("catch_up_s", 0.0),
        "lag_bytes_before": behind,
        "sequences_set": sequences_set,
    }
