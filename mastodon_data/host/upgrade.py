#!/usr/bin/env python3
"""One step of a blue/green major upgrade by logical replication, on this server: the old
primary publishes, the new one (the next major version) copies the schema, subscribes, catches
up; the cut-over runs inside the switchover's pause (its pause, repoint and resume steps), and
afterwards the old primary subscribes to the new one, so a rollback (the same steps the other
way) loses nothing. Each step is idempotent and reads its state from PostgreSQL: running it
again finishes what an interrupted run left.

    publish     the publisher: refuses what logical replication cannot carry (see
                upgrade_checks.py), wal_level=logical (ALTER SYSTEM; a restart with this
                server's pools in `databases` paused around it, timed), the peer's pg_hba
                line, pg_read_all_data for the replication role, PUBLICATION mdata_upgrade
                FOR ALL TABLES
    seed        the subscriber: Mastodon's role (with the peer's SCRAM verifier, which the
                pools pass through) and database, the schema from the peer
                (its own pg_dump, in one transaction) unless tables exist, a SUBSCRIPTION
                to the peer's publication (copy_data: the rows too); this server's PgBouncer
                given the same verifier
    reverse     seed with copy_data=false: the old primary subscribes to the new one after
                the cut-over (its tables hold the same rows already)
    sync_state  the subscriber: each table's state, the peer's LSN and how far it was applied
    refresh_views  the subscriber, in sync: its materialized views filled (the schema copy
                made them empty, replication carries no view rows)
    read_only   Mastodon's role may not write here (default_transaction_read_only, its
                sessions ended); the apply worker, which runs as postgres, goes on
    writable    that setting removed
    catch_up    the subscriber, pools paused: waits (bounded) until the peer's slot
                confirms the peer's current LSN
    sequences   the subscriber: each sequence set to the peer's last_value (never back)
    detach      the subscriber: DROP SUBSCRIPTION (its slot on the peer goes with it)
    prepare_logical  publish's refusals, wal_level set and a checkpoint, before any pause
    restart_logical  publish's restart alone (this server's pools paused around it)
    state       its subscriptions, publication and whether Mastodon's role may write
    retire      the server that stays: its publication and subscribers' slots dropped

stdin (JSON): action, postgres_version, port, db_name, db_user, replication_user,
peer_address, peer_port, peer_ca_cert (the CA of the peer's server certificate: verify-full),
pgbouncer_port, databases, pause_wait, catch_up_wait, db_user_scram (seed: publish's report);
secrets replication_password (the peer's replication role), db_password (seed). --serve: one
step per line, as switchover.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from common import (
    Cluster,
    HostError,
    as_postgres,
    log,
    main_wrapper,
    pgpass_line,
    read_params,
    run,
    write_if_changed,
)
from pooler import refresh_user
from primary import ensure_database, ensure_role
from switchover import lsn_value, pause, resume, serve
from upgrade_checks import check_carried, check_headroom
from upgrade_verifier import ensure_same_verifier, old_verifier, pool_verifier, scram_public_part

PUBLICATION = "mdata_upgrade"
UPGRADE_DIR = Path("/etc/postgresql/mastodon-data-upgrade")  # the peers' CAs
PGPASS = Path("/var/lib/postgresql/.mdata-upgrade.pgpass")
HBA_TAG = "# mastodon-data upgrade"
SYNC_LAG_BYTES = 1 << 20  # in sync: the slot confirmed all but this much of the peer's WAL


def subscription_name(peer_address: str) -> str:
    return "mdata_from_" + re.sub(r"[^a-z0-9]", "_", peer_address.lower())


def peer_conninfo(params: dict) -> str:
    """The peer's database as the replication role: TLS verified, the password in a 0600
    file (never in the catalog, a command line or a log)."""
    address = params["peer_address"]
    return (
        f"host={address} port={int(params['peer_port'])} dbname={params['db_name']} "
        f"user={params['replication_user']} sslmode=verify-full "
        f"sslrootcert={UPGRADE_DIR / (address + '.crt')} passfile={PGPASS}"
    )


def ensure_peer_access(params: dict) -> bool:
    """The peer's CA and the replication password, for psql, pg_dump and the subscription."""
    UPGRADE_DIR.mkdir(exist_ok=True)
    UPGRADE_DIR.chmod(0o755)  # postgres reads the CA in it; a script's umask may be 077
    changed = write_if_changed(
        UPGRADE_DIR / f"{params['peer_address']}.crt", params["peer_ca_cert"], owner="postgres"
    )
    where = (params["peer_address"], int(params["peer_port"]), params["db_name"])
    prefix = pgpass_line(*where, params["replication_user"], "")
    old = PGPASS.read_text().splitlines() if PGPASS.exists() else []
    lines = [line for line in old if not line.startswith(prefix)]
    lines.append(pgpass_line(*where, params["replication_user"], params["replication_password"]))
    return write_if_changed(PGPASS, "\n".join(lines) + "\n", mode=0o600, owner="postgres") | changed


def on_peer(cluster: Cluster, params: dict, statement: str) -> subprocess.CompletedProcess:
    """SQL on the peer's database (on stdin), as its replication role."""
    argv = [str(cluster.bindir / "psql"), "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"]
    return run(as_postgres([*argv, "-d", peer_conninfo(params)]), input=statement, timeout=120)


def peer_sql(cluster: Cluster, params: dict, statement: str) -> str:
    return on_peer(cluster, params, statement).stdout.strip()


# --- the publisher -------------------------------------------------------------------------
def prepare_logical(cluster: Cluster, params: dict) -> dict:
    """publish's refusals and its wal_level set for the restart, with a checkpoint (the
    shutdown's own is then short): run first, outside any pause, so the pause that follows
    (publish) spans the restart only."""
    check_carried(cluster, params["db_name"])
    check_headroom(cluster)
    if cluster.sql("SHOW wal_level;") == "logical":
        return {"restart_needed": False}
    cluster.sql("ALTER SYSTEM SET wal_level = 'logical';")
    cluster.sql("CHECKPOINT;")
    return {"restart_needed": True}


def ensure_logical(cluster: Cluster, params: dict) -> float | None:
    """wal_level=logical through ALTER SYSTEM (postgresql.auto.conf, read after the host
    scripts' conf.d file, so a later `pulumi up` keeps it). A restart: this server's pools
    are paused around it, so their clients wait instead of failing. Returns its seconds."""
    if cluster.sql("SHOW wal_level;") == "logical":
        return None
    cluster.sql("ALTER SYSTEM SET wal_level = 'logical';")
    cluster.sql("CHECKPOINT;")  # before the pause: the shutdown's own checkpoint is then short
    start = time.monotonic()
    pause(params)
    try:
        log("restarting for wal_level=logical")
        cluster.ctl("restart")
        cluster.wait_ready()
    finally:
        resume(params)
    return round(time.monotonic() - start, 3)


def ensure_peer_hba(cluster: Cluster, params: dict) -> bool:
    """The subscriber's line, after the stack's managed block (which a `pulumi up` rewrites
    and keeps first): logical replication matches the database, not `replication`."""
    path = cluster.confdir / "pg_hba.conf"
    line = (
        f"hostssl {params['db_name']} {params['replication_user']} "
        f"{params['peer_address']}/32 scram-sha-256 {HBA_TAG}"
    )
    text = path.read_text()
    if line in text.splitlines():
        return False
    write_if_changed(path, text.rstrip("\n") + "\n" + line + "\n", mode=0o640, owner="postgres")
    cluster.ctl("reload")
    return True


def publish(cluster: Cluster, params: dict) -> dict:
    db = params["db_name"]
    check_carried(cluster, db)
    check_headroom(cluster)
    restart_s = ensure_logical(cluster, params)
    hba = ensure_peer_hba(cluster, params)
    role = params["replication_user"]
    cluster.sql(f'GRANT pg_read_all_data TO "{role}";')  # the copy reads every table
    published = f"SELECT 1 FROM pg_publication WHERE pubname = '{PUBLICATION}';"
    exists = cluster.sql(published, database=db)
    if not exists:
        cluster.sql(f"CREATE PUBLICATION {PUBLICATION} FOR ALL TABLES;", database=db)
    return {
        "publication": PUBLICATION, "created": not exists, "restart_s": restart_s, "hba": hba,
        "db_user_scram": scram_public_part(cluster, params["db_user"]),
    }  # fmt: skip


# --- the subscriber ------------------------------------------------------------------------
def has_tables(cluster: Cluster, db: str) -> bool:
    count = cluster.sql(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT LIKE 'pg_toast%' "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema');",
        database=db,
    )
    return count != "0"


def copy_schema(cluster: Cluster, params: dict) -> None:
    """The peer's schema by this version's pg_dump (it reads older servers), owners kept,
    loaded in one transaction: it is there whole or not at all."""
    options = ["--schema-only", "--no-privileges", "--no-publications", "--no-subscriptions"]
    argv = [str(cluster.bindir / "pg_dump"), *options, "-w", "-d", peer_conninfo(params)]
    dump = run(as_postgres(argv)).stdout
    cluster.sql(f"BEGIN;\n{dump}\nCOMMIT;", database=params["db_name"])


def subscribed(cluster: Cluster, db: str, name: str) -> bool:
    return bool(
        cluster.sql(f"SELECT 1 FROM pg_subscription WHERE subname = '{name}';", database=db)
    )


def subscribe(cluster: Cluster, params: dict, copy_data: bool) -> bool:
    """CREATE SUBSCRIPTION, unless it exists. A slot of its name left on the peer by a run
    cut short (the slot made, the subscription not committed) is dropped first."""
    db, name = params["db_name"], subscription_name(params["peer_address"])
    if subscribed(cluster, db, name):
        return False
    peer_sql(cluster, params, (
        f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        f"WHERE slot_name = '{name}' AND NOT active;"
    ))  # fmt: skip
    cluster.sql(
        f"CREATE SUBSCRIPTION {name} CONNECTION '{peer_conninfo(params)}' "
        f"PUBLICATION {PUBLICATION} WITH (copy_data = {str(copy_data).lower()});",
        database=db,
    )
    return True


def check_not_cut_over(cluster: Cluster) -> None:
    """A server the old primary follows already (its slot is here) took the writes: copying
    the old rows into it again would undo that."""
    slots = cluster.sql("SELECT string_agg(slot_name, ', ') FROM pg_replication_slots "
                        "WHERE slot_name LIKE 'mdata\\_from\\_%';")  # fmt: skip
    if slots:
        raise HostError(
            f"this server was cut over to (the old primary follows it through slot {slots}): "
            "no seed; to go back, run the cut-over the other way"
        )


def seed(cluster: Cluster, params: dict, copy_data: bool = True) -> dict:
    if copy_data:
        check_not_cut_over(cluster)
    changed = []
    if ensure_peer_access(params):
        changed.append("peer access written")
    db = params["db_name"]
    if copy_data:
        role = ensure_role(cluster, params["db_user"], params["db_password"], "LOGIN NOREPLICATION")
        changed += [] if role == "unchanged" else [f"role {role}"]
        if ensure_same_verifier(cluster, params):
            changed.append("role's verifier the old primary's")
        if refresh_user(params["db_user"], old_verifier(params)):  # this server's own pool
            changed.append("pool's auth file the old primary's verifier")
        state = ensure_database(cluster, db, params["db_user"])
        changed += [] if state == "unchanged" else [f"database {state}"]
    if not has_tables(cluster, db):
        copy_schema(cluster, params)
        changed.append("schema copied")
    if subscribe(cluster, params, copy_data):
        changed.append("subscribed")
    for line in changed:
        log(line)
    return {"subscription": subscription_name(params["peer_address"]), "changed": changed}


def sync_report(tables: list[dict], worker: list[dict], peer: dict, lag_limit: int) -> dict:
    """The subscription's state from its catalog rows, its apply worker's row and the peer's
    LSNs: in sync when every table is ready (r), the worker runs and the slot confirmed all
    but `lag_limit` bytes of what the peer had written when asked (under writes it is always
    a little behind; the cut-over's catch_up waits for the rest)."""
    waiting = sorted(t["name"] for t in tables if t["state"] != "r")
    current, confirmed = peer["current_lsn"], peer["confirmed_lsn"]
    lag = lsn_value(current) - lsn_value(confirmed) if confirmed else None
    running = bool(worker) and worker[0]["pid"] is not None
    return {
        "tables": len(tables),
        "not_ready": waiting,
        "worker_running": running,
        "received_lsn": worker[0]["received_lsn"] if worker else None,
        "peer_lsn": current,
        "confirmed_lsn": confirmed,
        "lag_bytes": lag,
        "in_sync": bool(tables and running and not waiting)
        and lag is not None
        and lag <= lag_limit,
    }


def sync_state(cluster: Cluster, params: dict) -> dict:
    name, db = subscription_name(params["peer_address"]), params["db_name"]
    tables = cluster.sql_json(
        "SELECT r.srrelid::regclass::text AS name, r.srsubstate AS state "
        "FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid "
        f"WHERE s.subname = '{name}'",
        database=db,
    )
    worker = cluster.sql_json(
        "SELECT pid, received_lsn::text, latest_end_lsn::text FROM pg_stat_subscription "
        f"WHERE subname = '{name}' AND relid IS NULL",
        database=db,
    )
    line = peer_sql(cluster, params, (
        "SELECT pg_current_wal_lsn() || ' ' || coalesce((SELECT confirmed_flush_lsn::text FROM "
        f"pg_replication_slots WHERE slot_name = '{name}'), '');"
    ))  # fmt: skip
    current, _, confirmed = line.partition(" ")
    peer = {"current_lsn": current, "confirmed_lsn": confirmed}
    return sync_report(tables, worker, peer, int(params.get("sync_lag_bytes", SYNC_LAG_BYTES)))


# --- the cut-over ----------------------------------------------------------------------------
CAUGHT_UP = re.compile(r"caught up to (\S+) in (\S+) s")


def catch_up(cluster: Cluster, params: dict) -> dict:
    """With the pools paused: the peer's current LSN, then (one session on the peer, polling
    every 10 ms) until the subscription's slot confirms it. Done already when the
    subscription is gone (detached by an earlier run)."""
    name, wait = subscription_name(params["peer_address"]), int(params["catch_up_wait"])
    if not subscribed(cluster, params["db_name"], name):
        return {"caught_up": True, "detached": True}
    loop = f"""DO $$
DECLARE target pg_lsn := pg_current_wal_lsn(); began timestamptz := clock_timestamp();
BEGIN
  LOOP
    EXIT WHEN (SELECT confirmed_flush_lsn >= target FROM pg_replication_slots
               WHERE slot_name = '{name}');
    IF clock_timestamp() > began + interval '{wait} s' THEN
      RAISE EXCEPTION 'the subscription {name} did not confirm % within {wait} s', target;
    END IF;
    PERFORM pg_sleep(0.01);
  END LOOP;
  RAISE NOTICE 'caught up to % in % s', target,
    round(extract(epoch FROM clock_timestamp() - began)::numeric, 3);
END $$;"""
    result = on_peer(cluster, params, loop)
    match = CAUGHT_UP.search(result.stderr)
    if not match:
        raise HostError(f"catch_up: no report from the peer: {result.stderr.strip()[-300:]}")
    return {"caught_up": True, "lsn": match.group(1), "catch_up_s": float(match.group(2))}


def sequences(cluster: Cluster, params: dict) -> dict:
    """Every sequence the peer has used set to its last_value here, never moved back (a run
    after the new primary took writes changes nothing)."""
    rows = peer_sql(cluster, params, (
        "SELECT coalesce(json_agg(json_build_object('schema', schemaname, 'name', "
        "sequencename, 'last_value', last_value)), '[]') FROM pg_sequences "
        "WHERE last_value IS NOT NULL;"
    ))  # fmt: skip
    literal = rows.replace("'", "''")
    count = cluster.sql(
        "SELECT count(setval(format('%I.%I', s.schema, s.name)::regclass, "
        "greatest(s.last_value, coalesce(p.last_value, s.last_value)))) "
        f"FROM json_to_recordset('{literal}') AS s(schema text, name text, last_value bigint) "
        "LEFT JOIN pg_sequences p ON p.schemaname = s.schema AND p.sequencename = s.name;",
        database=params["db_name"],
    )
    return {"sequences_set": int(count)}


def read_only(cluster: Cluster, params: dict, on: bool) -> dict:
    """Mastodon's role may only read here (on), or write again (off). Its sessions end so the
    setting holds for each (the pools, paused, reconnect); the apply worker, as postgres,
    applies on."""
    role = params["db_user"]
    if on:
        cluster.sql(f'ALTER ROLE "{role}" SET default_transaction_read_only = on;')
        ended = cluster.sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE usename = '{role}';"
        )
        return {"read_only": True, "sessions_ended": int(ended)}
    cluster.sql(f'ALTER ROLE "{role}" RESET default_transaction_read_only;')
    return {"read_only": False}


def detach(cluster: Cluster, params: dict) -> dict:
    name = subscription_name(params["peer_address"])
    if not subscribed(cluster, params["db_name"], name):
        return {"detached": False}
    cluster.sql(f"DROP SUBSCRIPTION {name};", database=params["db_name"])
    return {"detached": True}


def refresh_views(cluster: Cluster, params: dict) -> dict:
    """The schema copy makes materialized views WITH NO DATA (reading one fails until it is
    refreshed) and logical replication carries no view rows: refreshed once in sync, before
    the cut-over."""
    db = params["db_name"]
    views = cluster.sql_json(
        "SELECT format('%I.%I', schemaname, matviewname) AS name FROM pg_matviews", database=db
    )
    for view in views:
        cluster.sql(f"REFRESH MATERIALIZED VIEW {view['name']};", database=db)
    return {"refreshed": [view["name"] for view in views]}


def state(cluster: Cluster, params: dict) -> dict:
    """Where this server stands: the upgrade's subscriptions here (by name), its publication,
    and whether Mastodon's role may write (read_only's setting)."""
    db = params["db_name"]
    names = cluster.sql(
        "SELECT coalesce(string_agg(subname, ' ' ORDER BY subname), '') FROM pg_subscription "
        "WHERE subname LIKE 'mdata\\_from\\_%';",
        database=db,
    )
    published = cluster.sql(f"SELECT 1 FROM pg_publication WHERE pubname = '{PUBLICATION}';",
                            database=db)  # fmt: skip
    setting = cluster.sql(
        "SELECT coalesce(string_agg(c, ','), '') FROM pg_db_role_setting s "
        "JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) c "
        f"WHERE r.rolname = '{params['db_user']}';"
    )
    return {
        "subscriptions": names.split(),
        "published": bool(published),
        "read_only": "default_transaction_read_only=on" in setting,
    }


def retire(cluster: Cluster, params: dict) -> dict:
    """The server that stays, once the old ones are retired: no publication, and no slot of a
    subscriber left on it (an old primary that is gone would leave one holding WAL forever)."""
    db = params["db_name"]
    slots = cluster.sql(
        "SELECT coalesce(string_agg(slot_name, ' '), '') FROM (SELECT slot_name, "
        "pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        "WHERE slot_name LIKE 'mdata\\_from\\_%' AND NOT active) d;"
    )
    cluster.sql(f"DROP PUBLICATION IF EXISTS {PUBLICATION};", database=db)
    return {"slots_dropped": slots.split(), "publication_dropped": True}


ACTIONS = {
    "publish": publish,
    "seed": seed,
    "pool_verifier": pool_verifier,
    "reverse": lambda cluster, params: seed(cluster, params, copy_data=False),
    "sync_state": sync_state,
    "read_only": lambda cluster, params: read_only(cluster, params, on=True),
    "writable": lambda cluster, params: read_only(cluster, params, on=False),
    "catch_up": catch_up,
    "sequences": sequences,
    "detach": detach,
    "refresh_views": refresh_views,
    "prepare_logical": prepare_logical,
    "restart_logical": lambda cluster, params: {"restart_s": ensure_logical(cluster, params)},
    "state": state,
    "retire": retire,
}


def step(params: dict) -> dict:
    action = ACTIONS.get(params["action"])
    if action is None:
        raise HostError(f"unknown upgrade action {params['action']!r} (one of {sorted(ACTIONS)})")
    return action(Cluster(params["postgres_version"], params["port"]), params)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve(step)
    else:
        main_wrapper(lambda: step(read_params()))
