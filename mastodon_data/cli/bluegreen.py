"""The operator's side of a blue/green major upgrade: the steps of host/upgrade.py and of the
switchover's pause, run over ssh in their order on the servers of both generations (the old
version's and the new one's). `publish` pauses every pool that sends writes to the publisher
around its wal_level restart; `cut_over` moves writes from one primary to the other inside one
pause, and undoes itself (the old primary writable, the pools resumed) when the new side does
not catch up; `sync_times` waits for a subscription to be in sync."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

from mastodon_data import plan
from mastodon_data.cli import host_ssh
from mastodon_data.config import Host, PoolSettings, ReplicationSettings
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
        """`on` publishes for `peer`. Its wal_level restart runs alone inside a pause of its
        own pools and of every other server's write pool of its generation (they send writes
        to it); the checks before and the publication after run outside the pause."""
        generation, _ = self.hosts[on]
        replication = generation.replication
        restarts = self.upgrade(on, "prepare_logical")["restart_needed"]
        if replication.pool is None or not restarts:
            return self.upgrade(on, "publish", peer=peer)
        db = replication.db_name
        others = [h.name for h in generation.hosts if h.name != on]
        self.on_pools(others, "pause", databases=(db,))
        try:
            pools = [db, read_pool_name(db)]
            restart = self.upgrade(on, "restart_logical", databases=pools)["restart_s"]
        finally:
            self.on_pools(others, "resume", databases=(db,))
        return {**self.upgrade(on, "publish", peer=peer), "restart_s": restart}

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
        self.turn_around(old, new)
        marks["reversed"] = time.monotonic()
        self.send_writes(old, new, pools)
        marks["resumed"] = time.monotonic()
        return cut_over_report(marks, caught, behind, sequences["sequences_set"])

    def turn_around(self, old: str, new: str) -> None:
        """After the new side detached: the old one follows it, the new one takes writes."""
        self.upgrade(old, "reverse", peer=new)
        self.upgrade(new, "writable")

    def send_writes(self, old: str, new: str, pools) -> None:
        """The pools of `pools` send DB_NAME to `new` and resume, and the old server's read pool
        resumes."""
        new_generation, new_host = self.hosts[new]
        db = new_generation.replication.db_name
        self.on_pools(
            pools, "repoint", databases=(db,), new_primary_address=new_host.private_address,
            new_primary_cert=new_generation.ca_cert,
        )  # fmt: skip
        self.switchover(old, "resume", databases=(read_pool_name(db),))

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


# --- the run `pulumi up` makes (components/upgrade.py): stdin JSON -> a report on stdout ------
def generation_payload(generation: Generation) -> dict:
    """A generation as JSON (the shipped exporter builds stay behind: the steps need none)."""
    replication = dataclasses.replace(generation.replication, exporter_builds=())
    return {
        "replication": dataclasses.asdict(replication),
        "hosts": [dataclasses.asdict(host) for host in generation.hosts],
        "ca_cert": generation.ca_cert,
        "db_password": generation.db_password,
        "replication_password": generation.replication_password,
    }


def generation_from(payload: dict) -> Generation:
    values = dict(payload["replication"])
    pool = values.get("pool")
    values["pool"] = PoolSettings(**pool) if pool else None
    for key, value in values.items():
        if isinstance(value, list):
            values[key] = tuple(value)
    return Generation(
        ReplicationSettings(**values),
        tuple(Host(**host) for host in payload["hosts"]),
        payload["ca_cert"],
        payload["db_password"],
        payload["replication_password"],
    )


class Upgrade:
    """Both generations' primaries and servers, driven towards the side that is to serve."""

    def __init__(self, driver: BlueGreen, sync_wait: float):
        self.driver, self.sync_wait = driver, sync_wait
        self.old = driver.generations["old"].hosts[0].name
        self.new = driver.generations["new"].hosts[0].name
        self.servers = tuple(driver.hosts)

    def writes_on_new(self) -> bool:
        """The old primary follows the new one: the cut-over was made (and not rolled back)."""
        new_state = self.driver.upgrade(self.new, "state")
        return not new_state["subscriptions"] and bool(
            self.driver.upgrade(self.old, "state")["subscriptions"]
        )

    def prepare(self) -> dict:
        """Both sides publish, the new one is seeded from the old one and is in sync."""
        published = self.driver.publish(self.old, self.new)
        self.driver.publish(self.new, self.old)  # for the way back
        scram = published["db_user_scram"]
        seeded = self.driver.upgrade(self.new, "seed", peer=self.old, db_user_scram=scram)
        for replica in self.driver.generations["new"].hosts[1:]:  # their pools: the same
            self.driver.upgrade(replica.name, "pool_verifier", db_user_scram=scram)
        synced = self.driver.sync_times(self.new, self.old, self.sync_wait)
        views = self.driver.upgrade(self.new, "refresh_views")
        return {"publish_restart_s": published["restart_s"], "seeded": seeded["changed"],
                "views_refreshed": views["refreshed"], **synced}  # fmt: skip

    def finish_cut_short(self) -> dict | None:
        """A cut-over cut short after the new side detached (neither side subscribes, one is
        read-only): finished, away from the read-only side."""
        old_state = self.driver.upgrade(self.old, "state")
        new_state = self.driver.upgrade(self.new, "state")
        if old_state["subscriptions"] or new_state["subscriptions"]:
            return None
        for stuck, to in ((old_state, self.new), (new_state, self.old)):
            if stuck["read_only"]:
                away = self.old if to == self.new else self.new
                self.driver.turn_around(away, to)
                self.driver.send_writes(away, to, self.servers)
                return {"finished_cut_over_to": to}
        return None

    def serve(self, side: str) -> dict:
        """Mastodon's writes go to `side` (new or old): what it took, idempotently."""
        finished = self.finish_cut_short() or {}
        if finished:
            return {**self.serve(side), **finished}
        if self.writes_on_new():
            if side == "new":
                return {"serving": "new", "cut_over": None}
            self.driver.sync_times(self.old, self.new, self.sync_wait)
            cut = self.driver.cut_over(self.new, self.old, self.servers)
            return {"serving": "old", "cut_over": cut}
        report = {"serving": "old", **self.prepare()}
        if side == "new":
            cut = self.driver.cut_over(self.old, self.new, self.servers)
            report |= {"serving": "new", "cut_over": cut}
        return report

    def retire(self) -> dict:
        """The old servers go: the old primary's subscription to the new one is dropped (its
        slot with it), or, the old primary unreachable, the slot on the new one."""
        if not self.writes_on_new():
            raise host_ssh.StepFailed(
                f"the old servers ({self.old} ...) still take Mastodon's writes: put upgradeFrom "
                "back with serve new, run pulumi up (the cut-over), then remove upgradeFrom"
            )
        detached = self.driver.upgrade(self.old, "detach", peer=self.new)
        return {"retired": self.old, **detached, **self.driver.upgrade(self.new, "retire")}


def main(argv: list[str] | None = None) -> int:
    """`python -m mastodon_data.cli.bluegreen serve|retire`, the run's values on stdin."""
    action = (argv if argv is not None else sys.argv[1:])[:1]
    if action not in (["serve"], ["retire"]):
        usage = "usage: python -m mastodon_data.cli.bluegreen serve|retire < run.json"
        print(usage, file=sys.stderr)
        return 2
    run = json.load(sys.stdin)
    generations = {side: generation_from(run["generations"][side]) for side in ("old", "new")}
    driver = BlueGreen(generations, run["ssh_private_key"], host_ssh.FIRST_USE)
    try:
        upgrade = Upgrade(driver, float(run["sync_wait"]))
        report = upgrade.serve(run["serve"]) if action == ["serve"] else upgrade.retire()
    except host_ssh.StepFailed as failed:
        print(f"blue/green upgrade: {failed}", file=sys.stderr)
        return 1
    finally:
        driver.close()
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
