#!/usr/bin/env python3
"""Drops, on the primary, the replication slots of replicas no longer configured, so they hold
no WAL for a replica that is gone. Each replica's step creates its own slot (host/replica.py),
so this runs beside those steps, and adding a replica never waits for it.

stdin (JSON): SlotsParams (mastodon_data/host_params.py).
"""

from __future__ import annotations

import time

from common import Cluster, HostError, log, main_wrapper, read_params, slot_name

SLOT_RELEASE_WAIT = 10.0  # seconds for a removed replica's walsender to end


def drop_slot(cluster: Cluster, name: str, wait: float = SLOT_RELEASE_WAIT) -> None:
    """Drops one of our slots. A removed replica may still stream on it (its host is removed
    after this step, or kept as a spare, which pg_hba still lets in and which reconnects within
    wal_retrieve_retry_interval): its walsender is ended, waited for, and the slot dropped at
    once in the same session; kept, it would hold WAL up to max_slot_wal_keep_size for a
    replica that is gone. A replica quicker than that is ended again, within `wait`."""
    where = f"slot_name = '{name}'"
    statement = (
        f"SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots WHERE {where} "
        f"AND active_pid IS NOT NULL;\nSELECT pg_drop_replication_slot(slot_name) "
        f"FROM pg_replication_slots WHERE {where};"
    )
    deadline = time.monotonic() + wait
    while True:
        try:
            cluster.sql(statement)
            return
        except HostError as error:
            if "is active for PID" not in str(error) or time.monotonic() > deadline:
                raise HostError(
                    f"slot {name} could not be dropped within {wait:.0f} s ({error}); "
                    "run the step again"
                ) from error
        time.sleep(0.1)


def stale_slots(cluster: Cluster, replicas: list[str]) -> list[str]:
    """Our slots (mdata_ prefix) whose replica is no longer configured."""
    wanted = {slot_name(name) for name in replicas}
    rows = cluster.sql_json(
        "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'mdata\\_%'"
    )
    return sorted(row["slot_name"] for row in rows if row["slot_name"] not in wanted)


def main() -> dict:
    params = read_params()
    cluster = Cluster(params["postgres_version"], params["port"])
    changed = []
    for name in stale_slots(cluster, params["replicas"]):
        drop_slot(cluster, name)
        changed.append(f"slot {name} dropped (replica no longer configured)")
    for line in changed:
        log(line)
    return {"role": "primary", "changed": changed}


if __name__ == "__main__":
    main_wrapper(main)
