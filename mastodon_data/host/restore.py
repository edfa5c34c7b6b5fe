#!/usr/bin/env python3
"""Restores a backup of the stack's repository onto THIS host and verifies it (`mastodon-data
restore`): the latest state the archived WAL reaches, or a point in time. For rehearsals on a
spare host, and for a new primary when the old one is lost (the repository alone suffices).

The restored server keeps this host's own configuration (Debian's /etc/postgresql; a fresh
cluster listens on localhost only) and does not archive (`--archive-mode=off`), so a rehearsal
never writes into the repository; the stack's backup step turns archiving on when the host
becomes the stack's primary. A cluster holding data is replaced only with `overwrite`.

stdin (JSON): RestoreParams (mastodon_data/host_params.py: target_time "" is the latest the
archive reaches) and the repository's secrets (see repository.py).
"""

from __future__ import annotations

import re
import shutil
import time

from common import POLL, Cluster, HostError, log, main_wrapper, read_params
from repository import BACKUP_TIMEOUT, install, pgbackrest, write_conf

PROMOTE_WAIT = 3600  # seconds for the replay of the archived WAL up to the target
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d(:?\d\d)?|Z)?$")


def prepare_cluster(cluster: Cluster, overwrite: bool) -> list[str]:
    """An empty data directory under this host's cluster configuration (made when missing)."""
    changed = []
    if cluster.install():
        changed.append(f"PostgreSQL {cluster.version} installed")
    if not cluster.exists():
        cluster.create()
        changed.append("cluster created")
    elif cluster.system_identifier() is not None and not overwrite:
        raise HostError(
            f"{cluster.datadir} holds a cluster; restore onto a spare host, or pass "
            "--overwrite to replace it (its data is lost)"
        )
    cluster.stop()
    cluster.datadir.mkdir(mode=0o700, parents=True, exist_ok=True)  # lost with a dead disk
    shutil.chown(cluster.datadir, "postgres", "postgres")
    for entry in cluster.datadir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    changed.append("data directory emptied")
    return changed


def restore_args(params: dict) -> list[str]:
    target = params["target_time"]
    args = ["--archive-mode=off"]
    if target:
        if not TIME_RE.match(target):
            raise HostError(f"target time {target!r} is not like 2026-11-23 18:04:05+00")
        args += ["--type=time", f"--target={target}", "--target-action=promote"]
    return [*args, "restore"]


def wait_promoted(cluster: Cluster) -> float:
    """Seconds until recovery ended (the target reached, or the archive's end) and the server
    accepts writes."""
    start = time.monotonic()
    while time.monotonic() - start < PROMOTE_WAIT:
        if cluster.sql("SELECT pg_is_in_recovery();") == "f":
            return round(time.monotonic() - start, 2)
        time.sleep(POLL * 5)
    raise HostError(f"recovery did not end within {PROMOTE_WAIT} s; see {cluster.log_file}")


def recovery_point(cluster: Cluster, since: int) -> str:
    """The server's own words on where recovery stopped (its log since the restore)."""
    with cluster.log_file.open("rb") as handle:
        handle.seek(since)
        text = handle.read().decode(errors="replace")
    found = re.findall(r"(recovery stopping [^\n]*|archive recovery complete|"
                       r"last completed transaction was at log time [^\n]*)", text)  # fmt: skip
    return "; ".join(found)


def verify(cluster: Cluster, db_name: str) -> dict:
    """What the restored server holds: its identity, timeline and the database's tables."""
    facts = cluster.sql_json(
        """SELECT (SELECT system_identifier::text FROM pg_control_system()) AS system_identifier,
        ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline,
        current_setting('server_version') AS server_version,
        (SELECT array_agg(datname ORDER BY datname) FROM pg_database
          WHERE NOT datistemplate) AS databases"""
    )[0]
    if db_name in facts["databases"]:
        facts["tables"] = cluster.sql_json(
            """SELECT n.nspname || '.' || c.relname AS name,
            pg_total_relation_size(c.oid) AS bytes FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r'
            AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1""",
            database=db_name,
        )
    return facts


def main() -> dict:
    params = read_params()
    cluster = Cluster(params["postgres_version"], params["port"])
    args = restore_args(params)
    changed = ["pgbackrest installed"] if install() else []
    write_conf(params, cluster.version, cluster.port)
    changed += prepare_cluster(cluster, bool(params["overwrite"]))
    log("pgbackrest restore " + " ".join(args[:-1]))
    start = time.monotonic()
    pgbackrest(params["stanza"], *args, timeout=BACKUP_TIMEOUT)
    restore_s = round(time.monotonic() - start, 2)
    since = cluster.log_file.stat().st_size if cluster.log_file.exists() else 0
    cluster.start()
    cluster.wait_ready(PROMOTE_WAIT)
    recovery_s = wait_promoted(cluster)
    return {
        "action": "restore",
        "changed": changed,
        "target_time": params["target_time"] or "latest",
        "restore_s": restore_s,
        "recovery_s": recovery_s,
        "recovery": recovery_point(cluster, since),
        **verify(cluster, params["db_name"]),
    }


if __name__ == "__main__":
    main_wrapper(main)
