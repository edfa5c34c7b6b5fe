"""What a blue/green upgrade refuses before it starts (host/upgrade.py's publish): what logical
replication does not carry, and too few free walsenders and slots for its subscription."""

from __future__ import annotations

from common import Cluster, HostError

SLOTS_NEEDED = 3  # the subscription's own, and max_sync_workers_per_subscription's two

UNCARRIED_TABLES = """
SELECT format('%I.%I', n.nspname, c.relname) AS name, c.relpersistence = 'u' AS unlogged
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND (c.relpersistence = 'u' OR c.relreplident = 'n'
  OR (c.relreplident = 'd'
      AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))
ORDER BY 1"""


def carry_refusals(tables: list[dict], large_objects: int) -> list[str]:
    """Why the database cannot be carried by logical replication, one sentence per cause
    (empty: it can). Under a publication FOR ALL TABLES a table without a replica identity
    refuses its UPDATEs and DELETEs, on the old primary, to Mastodon."""
    refusals = []
    unlogged = [t["name"] for t in tables if t["unlogged"]]
    no_identity = [t["name"] for t in tables if not t["unlogged"]]
    if no_identity:
        refusals.append(
            f"table(s) {', '.join(no_identity)} have no primary key and no replica identity: "
            "logical replication cannot carry their updates and deletes (the old primary would "
            "refuse them); give each a primary key, or `ALTER TABLE <name> REPLICA IDENTITY "
            "USING INDEX <a unique index on NOT NULL columns>` (or REPLICA IDENTITY FULL)"
        )
    if unlogged:
        refusals.append(
            f"unlogged table(s) {', '.join(unlogged)} are not replicated: "
            "`ALTER TABLE <name> SET LOGGED` first, or empty them"
        )
    if large_objects:
        refusals.append(
            f"{large_objects} large object(s) in pg_largeobject are not replicated: move them "
            "into bytea columns or remove them (lo_unlink) before the upgrade"
        )
    return refusals


def check_carried(cluster: Cluster, db_name: str) -> None:
    tables = cluster.sql_json(UNCARRIED_TABLES, database=db_name)
    large_objects = int(
        cluster.sql("SELECT count(*) FROM pg_largeobject_metadata;", database=db_name)
    )
    refusals = carry_refusals(tables, large_objects)
    if refusals:
        raise HostError(f"database {db_name}: " + "; ".join(refusals))


def check_headroom(cluster: Cluster) -> None:
    """The subscription's walsender and slots beside the replicas' (a standby needs the
    primary's max_wal_senders or more, so the limits are not raised here)."""
    used = cluster.sql_json(
        "SELECT current_setting('max_wal_senders')::int AS senders, "
        "current_setting('max_replication_slots')::int AS slots, "
        "(SELECT count(*) FROM pg_stat_replication) AS senders_used, "
        "(SELECT count(*) FROM pg_replication_slots) AS slots_used"
    )[0]
    for setting, limit, in_use in (
        ("max_wal_senders", used["senders"], used["senders_used"]),
        ("max_replication_slots", used["slots"], used["slots_used"]),
    ):
        if limit - in_use < SLOTS_NEEDED:
            raise HostError(
                f"{setting} is {limit} with {in_use} in use: the upgrade's subscription needs "
                f"{SLOTS_NEEDED} free; raise walSenders on every server first (pulumi up)"
            )
