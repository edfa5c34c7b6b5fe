#!/usr/bin/env python3
"""Read-only report of this host's PostgreSQL: role, lag, slots, connections. Changes nothing.

stdin (JSON): StatusParams (mastodon_data/host_params.py); with a stanza (backups), the
repository's backups and the WAL archive's progress are reported too (`pgbackrest info`).
"""

from __future__ import annotations

import socket

import repository
from common import Cluster, main_wrapper, read_params

# Lag in seconds is 0 when the replica has replayed everything the primary has; otherwise the
# primary's replay_lag (measured by its walsender), never the age of the last replayed commit
# (on an idle primary that is the idle time, not lag).
PRIMARY_QUERIES = {
    "replicas": """SELECT application_name, host(client_addr) AS client_addr, state, sync_state,
        pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS lag_bytes,
        CASE WHEN replay_lsn >= pg_current_wal_lsn() THEN 0
             ELSE extract(epoch FROM replay_lag)::float END AS lag_seconds
        FROM pg_stat_replication ORDER BY application_name""",
    "slots": """SELECT slot_name, active, wal_status,
        pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes
        FROM pg_replication_slots ORDER BY slot_name""",
}
# A replica knows the primary's end of WAL as of the primary's last message (latest_end_lsn):
# lag 0 when it has replayed all it received and that; otherwise unknown here (null): the
# primary's report has it.
REPLICA_QUERIES = {
    "receiver": """SELECT status, sender_host, sender_port, slot_name,
        pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint
            AS replay_backlog_bytes,
        CASE WHEN pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()
              AND pg_last_wal_replay_lsn() >= latest_end_lsn THEN 0 END AS lag_seconds
        FROM pg_stat_wal_receiver""",
}


def main() -> dict:
    params = read_params()
    cluster = Cluster(params["postgres_version"], params["port"])
    report = {
        "host": socket.gethostname(),
        "installed": cluster.installed(),
        "cluster": cluster.exists(),
        "running": False,
    }
    if not (report["installed"] and report["cluster"] and cluster.running()):
        return report
    info = cluster.sql_json("""SELECT pg_is_in_recovery() AS in_recovery,
        (SELECT system_identifier::text FROM pg_control_system()) AS system_identifier,
        pg_postmaster_start_time()::text AS postmaster_start_time,
        current_setting('server_version') AS server_version,
        (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')
            AS client_connections""")[0]
    report.update(info, running=True, role="replica" if info["in_recovery"] else "primary")
    queries = REPLICA_QUERIES if info["in_recovery"] else PRIMARY_QUERIES
    report.update({key: cluster.sql_json(query) for key, query in queries.items()})
    if params["stanza"]:
        report["backups"] = backups_report(cluster, params["stanza"], info["in_recovery"])
    return report


def backups_report(cluster: Cluster, stanza: str, in_recovery: bool) -> dict:
    """The repository's backups (pgbackrest info) and, on the primary, the archive's progress."""
    report = repository.summary(repository.info(stanza))
    if not in_recovery:
        report["archive"] = repository.archive_status(cluster)
    return report


if __name__ == "__main__":
    main_wrapper(main)
