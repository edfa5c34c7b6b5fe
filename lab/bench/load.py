"""Replication under a write load: pgbench at a set rate, the primary's lag sampled, a replica's
link cut and restored, and the rows each host has once every replica has replayed."""

from __future__ import annotations

import subprocess
import threading
import time

import psycopg

from lab.bench.figures import spread
from lab.bench.lab import DB, LAB, PGBIN, Bench, BenchError, digest
from lab.system import run
from mastodon_data.database import lsn

REPLAY_LIMIT = 120  # seconds every replica may take to replay the primary's last position
CATCH_UP_LIMIT = 60  # seconds a replica may take to catch up after its link returns
SAMPLE_EVERY = 0.05  # seconds between two looks at the primary's pg_stat_replication
CUT_LEAD, CUT_TAIL = 5, 15  # seconds of load before the cut and after the link's return
RATE = 300  # transactions per second of the write loads (see --rate)
LAG_SQL = """SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
    extract(epoch FROM replay_lag)::float FROM pg_stat_replication"""


class Load:
    """pgbench (tpcb-like) on the primary for `seconds`, at `rate` transactions per second."""

    def __init__(self, seconds: int, rate: int):
        self.seconds = seconds
        command = f"runuser -u postgres -- {PGBIN}/pgbench -n -c 2 -j 2 -T {seconds} -R {rate} {DB}"
        self.process = subprocess.Popen(
            LAB.ssh_command(LAB.host(1).address, command),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def committed(self) -> int:
        try:
            out, err = self.process.communicate(timeout=self.seconds + 60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise BenchError("pgbench did not end in time") from None
        for line in out.splitlines():
            if "number of transactions actually processed" in line:
                return int(line.split(":")[1].split("/")[0])
        raise BenchError(f"pgbench printed no count: {out} {err}")


class LagSampler(threading.Thread):
    """The primary's pg_stat_replication every SAMPLE_EVERY s: bytes behind and, when behind,
    replay_lag (0 when a replica has replayed everything, as status.py reports it)."""

    def __init__(self, conn: psycopg.Connection):
        super().__init__(daemon=True)
        self.conn, self.done = conn, threading.Event()
        self.samples: list[tuple[str, int, float | None]] = []
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            while not self.done.wait(SAMPLE_EVERY):
                for name, behind, lag in self.conn.execute(LAG_SQL).fetchall():
                    behind = max(behind or 0, 0)
                    self.samples.append((name, behind, 0.0 if behind == 0 else lag))
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc

    def figures(self) -> dict:
        self.done.set()
        self.join(timeout=10)
        if self.error or not self.samples:
            raise BenchError(f"lag sampling failed: {self.error or 'no sample'}")
        seconds = [lag for _, _, lag in self.samples if lag is not None]
        p50, p99, top = spread(seconds)
        b50, b99, btop = spread([float(behind) for _, behind, _ in self.samples])
        return {
            "lag_p50_s": p50,
            "lag_p99_s": p99,
            "lag_max_s": top,
            "lag_p50_bytes": b50,
            "lag_p99_bytes": b99,
            "lag_max_bytes": btop,
            "lag_samples": len(self.samples),
        }


def primary_lsn(conn: psycopg.Connection) -> int:
    return lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])


def replayed_after(bench: Bench, index: int, target: int, limit: float, start: float) -> float:
    """Seconds from `start` until replica `index` has replayed `target`, polled every 20 ms
    (connecting again while the host is unreachable)."""
    conn = None
    try:
        while time.monotonic() - start < limit:
            try:
                conn = conn or bench.connect(index)
                row = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
                if lsn(row[0]) >= target:
                    return time.monotonic() - start
            except psycopg.OperationalError:
                conn = None
            time.sleep(0.02)
    finally:
        if conn:
            conn.close()
    raise BenchError(f"h{index} did not replay {target:X} within {limit} s")


def rows_lost(bench: Bench, before: int, committed: int) -> dict:
    """Once every replica has replayed the primary's last position: committed rows missing on
    any host (the primary included), and whether every replica's checksum is the primary's."""
    with bench.connect(1) as conn:
        target, start = primary_lsn(conn), time.monotonic()
    for index in bench.replica_hosts():
        replayed_after(bench, index, target, REPLAY_LIMIT, start)
    expected = digest(1)
    found = [expected] + [digest(i) for i in bench.replica_hosts()]
    return {
        "rows_committed": committed,
        "rows_lost": max(before + committed - count for count, _ in found),
        "checksums_match": all(d == expected for d in found),
    }


def lag_under_load(bench: Bench, seconds: int, rate: int) -> dict:
    before = digest(1)[0]
    with bench.connect(1) as conn:
        sampler = LagSampler(conn)
        sampler.start()
        committed = Load(seconds, rate).committed()
        figures = sampler.figures()
    lost = rows_lost(bench, before, committed)
    return {**figures, **{f"load_{k}": v for k, v in lost.items()}, "load_tps": committed / seconds}


def set_link(index: int, state: str) -> None:
    port = LAB.host(index).switch_port
    run(["ip", "-n", LAB.switch_ns, "link", "set", port, state])


def link_cut(bench: Bench, cut: int, rate: int) -> dict:
    """The first replica's link into the switch down for `cut` s under load, then back."""
    index, before = bench.replica_hosts()[0], digest(1)[0]
    with bench.connect(1) as conn:
        load = Load(CUT_LEAD + cut + CUT_TAIL, rate)
        time.sleep(CUT_LEAD)
        try:
            set_link(index, "down")
            time.sleep(cut)
        finally:
            set_link(index, "up")
        back = time.monotonic()
        target = primary_lsn(conn)
    catch_up = replayed_after(bench, index, target, CATCH_UP_LIMIT, back)
    committed = load.committed()
    lost = rows_lost(bench, before, committed)
    return {"catch_up_after_cut_s": catch_up, **{f"cut_{k}": v for k, v in lost.items()}}
