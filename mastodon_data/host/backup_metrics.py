#!/usr/bin/env python3
"""pgBackRest's state as Prometheus metrics, for node_exporter's textfile collector: reads
`pgbackrest info --output=json` of one stanza (as postgres: the repository's key is in a file
only postgres and root read) and writes the metrics to a `.prom` file, atomically (a temporary
file in the same directory, renamed; 0644; no secret in it). The exporters step (exporters.py)
copies this file to the server and runs it every REPEAT seconds: a systemd timer, or (no
systemd, the lab) `--every`.

    backup_metrics.py --stanza mastodon --output /var/lib/prometheus/node-exporter/pgbackrest.prom

Metrics (rules.yml reads them; `stanza` on each):
  pgbackrest_info_success                      1: `pgbackrest info` answered with the stanza
  pgbackrest_info_timestamp_seconds            when this file was written (stale: no timer)
  pgbackrest_stanza_status                     pgBackRest's status code (0 ok, 2 no valid backups)
  pgbackrest_backup_last_completion_timestamp_seconds{backup_type}
      when the newest backup of that type or a larger one finished: full; diff = full or
      diff; incr = any (a timestamp, so the age the rules compute grows even if this stops)

Stdlib, and Debian's python3-prometheus-client for the file's format and its atomic write.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

PGBACKREST = "/usr/bin/pgbackrest"
AS_POSTGRES = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
INFO_TIMEOUT = 120  # seconds: pgBackRest's own retries against an unreachable repository
REPEAT = 60  # seconds between two runs (the timer's period)
# backup_type -> the pgBackRest backup types that count as one of it.
COUNTS_AS = {"full": ("full",), "diff": ("full", "diff"), "incr": ("full", "diff", "incr")}


def read_info(stanza: str) -> dict | None:
    """The stanza's entry of `pgbackrest info --output=json`; None when it cannot be read."""
    argv = [*AS_POSTGRES, PGBACKREST, f"--stanza={stanza}", "info", "--output=json"]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=INFO_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"pgbackrest info did not answer in {INFO_TIMEOUT} s", file=sys.stderr)
        return None
    if result.returncode != 0:
        print(f"pgbackrest info: exit {result.returncode}: {result.stderr.strip()[-500:]}",
              file=sys.stderr)  # fmt: skip
        return None
    try:
        listed = json.loads(result.stdout)
    except ValueError:
        return None
    return next((entry for entry in listed if entry.get("name") == stanza), None)


def metric_values(info: dict | None, now: float) -> dict[str, list[tuple[dict, float]]]:
    """metric name -> [(labels other than stanza, value)]."""
    values: dict[str, list[tuple[dict, float]]] = {
        "pgbackrest_info_success": [({}, 0.0 if info is None else 1.0)],
        "pgbackrest_info_timestamp_seconds": [({}, now)],
    }
    if info is None:
        return values
    values["pgbackrest_stanza_status"] = [({}, float(info["status"]["code"]))]
    backups = info.get("backup", [])
    values["pgbackrest_backup_last_completion_timestamp_seconds"] = [
        ({"backup_type": kind}, float(max(b["timestamp"]["stop"] for b in counted)))
        for kind, types in COUNTS_AS.items()
        if (counted := [b for b in backups if b["type"] in types])
    ]
    return values


HELP = {
    "pgbackrest_info_success": "1 when pgbackrest info answered with the stanza, else 0",
    "pgbackrest_info_timestamp_seconds": "Unix time pgbackrest info was last run",
    "pgbackrest_stanza_status": "pgBackRest's status code of the stanza (0 ok)",
    "pgbackrest_backup_last_completion_timestamp_seconds": (
        "Unix time the newest backup of this type (diff: or full; incr: any) finished"
    ),
}


def write_metrics(path: str, stanza: str, values: dict[str, list[tuple[dict, float]]]) -> None:
    """The metrics into `path`: prometheus_client writes a temporary file beside it and renames
    it over `path` (node_exporter reads only *.prom files, never the half-written one)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    for name, samples in values.items():
        names = ["stanza", *sorted({key for labels, _ in samples for key in labels})]
        gauge = Gauge(name, HELP[name], names, registry=registry)
        for labels, value in samples:
            gauge.labels(stanza=stanza, **labels).set(value)
    os.umask(0o022)  # 0644: node_exporter reads it as prometheus
    write_to_textfile(path, registry)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stanza", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--every", type=float, default=0, help="repeat (seconds); 0: once")
    args = parser.parse_args()
    while True:
        write_metrics(args.output, args.stanza, metric_values(read_info(args.stanza), time.time()))
        if not args.every:
            return
        time.sleep(args.every)


if __name__ == "__main__":
    main()
