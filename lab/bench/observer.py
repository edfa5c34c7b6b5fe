"""What runs on which bench host when, during an `up` (for the breakdown only)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from lab.bench.lab import HOSTS, LAB

WATCHED = ("primary.py", "replica.py", "status.py", "pg_basebackup", "pg_createcluster", "pg_ctl")


def watched(argv: list[str]) -> str | None:
    """Which step or PostgreSQL tool a process of a host is (None: not one we follow)."""
    if argv[1:2] == ["-c"] and "mastodon-data-" in "".join(argv[2:3]):
        return "launcher"  # ssh session of a step: the scripts written, the script run
    names = [os.path.basename(arg) for arg in argv[:3]]  # perl -w /usr/bin/pg_createcluster
    return next((name for name in names if name in WATCHED), None)


class Observer(threading.Thread):
    """What runs on which bench host when (/proc every 50 ms: processes are in the hosts'
    network namespaces, not in a PID namespace of their own). For the breakdown only."""

    def __init__(self):
        super().__init__(daemon=True)
        self.hosts = {
            f"net:[{os.stat(f'/run/netns/{LAB.host(i).netns}').st_ino}]": LAB.host(i).name
            for i in range(1, HOSTS + 1)
        }
        self.spans: dict[tuple[str, str, str], list[float]] = {}
        self.done = threading.Event()

    def look(self) -> None:
        now = time.monotonic()
        for proc in Path("/proc").iterdir():
            try:
                host = self.hosts.get(os.readlink(proc / "ns" / "net"))
                argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            what = watched(argv) if host else None
            if what:
                self.spans.setdefault((proc.name, host, what), [now, now])[1] = now

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.look()

    def report(self, origin: float) -> list[dict]:
        """Spans in seconds from `origin`; overlapping ones of one kind on one host merged
        (pg_basebackup's WAL streamer, a fork before its exec)."""
        self.done.set()
        self.join(timeout=10)
        merged: list[dict] = []
        for (_, host, what), (a, b) in sorted(self.spans.items(), key=lambda kv: kv[1][0]):
            last = next((m for m in merged if (m["host"], m["what"]) == (host, what)), None)
            if last and a - origin <= last["to_s"]:
                last["to_s"] = max(last["to_s"], round(b - origin, 2))
                continue
            merged.insert(0, {"host": host, "what": what, "from_s": round(a - origin, 2)})
            merged[0]["to_s"] = round(b - origin, 2)
        return sorted(merged, key=lambda span: span["from_s"])
