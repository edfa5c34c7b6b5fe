#!/usr/bin/env python3
"""Promotes this hot standby to primary (pg_promote) and clears its upstream settings.
Idempotent: on a primary it changes nothing.

stdin (JSON): PromoteParams (mastodon_data/host_params.py).
"""

from __future__ import annotations

import time

from common import Cluster, HostError, log, main_wrapper, read_params

PROMOTE_WAIT = 60  # seconds pg_promote may take


def promote(cluster: Cluster) -> dict:
    """Promotes the cluster if it is a standby; its role, what changed and its timeline."""
    if not (cluster.exists() and cluster.running()):
        raise HostError(f"PostgreSQL {cluster.version}/main is not running here: start it first")
    changed = []
    if cluster.sql("SELECT pg_is_in_recovery();") == "t":
        log("promoting this standby")
        start = time.monotonic()
        done = cluster.sql(f"SELECT pg_promote(true, {PROMOTE_WAIT});")
        if done != "t":
            raise HostError(f"pg_promote did not finish within {PROMOTE_WAIT} s; see the log")
        changed.append(f"promoted in {time.monotonic() - start:.2f} s")
    for setting in ("primary_conninfo", "primary_slot_name"):
        if cluster.sql(f"SHOW {setting};"):
            cluster.sql(f"ALTER SYSTEM RESET {setting};")
            changed.append(f"{setting} cleared")
    if len(changed) > 1 or (changed and not changed[0].startswith("promoted")):
        cluster.ctl("reload")
    # The current WAL file name starts with the timeline, in hex.
    timeline = int(cluster.sql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8);"), 16)
    return {
        "role": "primary",
        "changed": changed,
        "timeline": timeline,
        "system_identifier": cluster.system_identifier(),
        # The pools trust it until the primary step issues one from the new primary's CA.
        "server_cert": (cluster.confdir / "server.crt").read_text(),
    }


def main() -> dict:
    params = read_params()
    return promote(Cluster(params["postgres_version"], params["port"]))


if __name__ == "__main__":
    main_wrapper(main)
