"""The Prometheus alert rules the stack ships: rules.yml (package data) with the stack's values
filled in, exported as the stack output `alert_rules`, so the operator's Prometheus loads
exactly the file the tests ran through `promtool test rules`. postgres_queries.yaml beside it
holds the PostgreSQL exporter's custom queries the rules read (pg_replica_*, pg_archive_*).
"""

from __future__ import annotations

import re
from importlib import resources

from mastodon_data.config import AlertThresholds, ReplicationSettings
from mastodon_data.config.topology import wal_bytes

PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
# The data volume's mount point (host/volume.py) and the root filesystem, which holds the data
# where a host has no data device.
DATA_MOUNTPOINTS = ("/mnt/mastodon-data", "/")


def template() -> str:
    return resources.files(__package__).joinpath("rules.yml").read_text()


def rule_values(replication: ReplicationSettings, alerts: AlertThresholds) -> dict[str, object]:
    """What each ${name} of rules.yml stands for, in the units the metrics have."""
    slot_limit = wal_bytes(replication.max_slot_wal_keep_size)
    return {
        "replica_count": replication.replica_count,
        "replay_lag_bytes": wal_bytes(alerts.alert_replay_lag_size),
        "replay_lag_seconds": alerts.alert_replay_lag_seconds,
        "slot_wal_bytes": slot_limit * alerts.alert_slot_wal_percent // 100,
        "max_slot_wal_keep_size": replication.max_slot_wal_keep_size,
        "connections_percent": alerts.alert_connections_percent,
        "archive_wait_seconds": alerts.alert_archive_wait_seconds,
        "pool_waiting_clients": alerts.alert_pool_waiting_clients,
        "pool_max_wait_seconds": alerts.alert_pool_max_wait_seconds,
        "open_files_percent": alerts.alert_open_files_percent,
        "data_mountpoints": "|".join(DATA_MOUNTPOINTS),
        "disk_percent": alerts.alert_disk_percent,
        "certificate_seconds": alerts.alert_certificate_days * 86400,
        "full_backup_seconds": alerts.alert_full_backup_age_hours * 3600,
        "diff_backup_seconds": alerts.alert_diff_backup_age_hours * 3600,
    }


def render_rules(replication: ReplicationSettings, alerts: AlertThresholds) -> str:
    """rules.yml with every ${name} filled in (a name without a value, or a value no rule
    uses, is a mistake in this package)."""
    text, values = template(), rule_values(replication, alerts)
    used = set(PLACEHOLDER.findall(text))
    if used != set(values):
        raise ValueError(f"rules.yml and rule_values differ: {sorted(used ^ set(values))}")
    return PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), text)
