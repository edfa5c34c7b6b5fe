#!/usr/bin/env python3
"""Makes this host a hot standby streaming from the primary. Idempotent: a healthy replica of
the same primary is never cloned again; one of another primary is refused unless `reseed`.

A new replica is the clone and little else: pg_basebackup into a scratch directory, the standby
settings written into the copy, the copy registered as the cluster (no initdb), one start that
returns when the server accepts connections, no reload.

stdin (JSON): ReplicaParams (mastodon_data/host_params.py: primary_ca_cert is the primary
step's report's) and the secret replication_password.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from common import (
    POLL,
    Cluster,
    HostError,
    app_hba_lines,
    apply_settings,
    as_postgres,
    log,
    main_wrapper,
    pgpass_line,
    read_params,
    replace_managed_block,
    run,
    server_settings,
    slot_name,
    write_if_changed,
    write_settings,
)
from standby import (
    PGPASS,
    PRIMARY_CA,
    PRIMARY_SETTINGS,
    conninfo,
    make_standby,
    upstream,
    write_initial_config,
)
from tls import ensure_certificate

STREAM_WAIT = 60  # seconds for a started replica to stream
LOG_TAIL_BYTES = 65536
# Walreceiver errors that only a new base backup cures.
NEEDS_RESEED = (
    "has already been removed",
    "can no longer get changes from replication slot",
    "This slot has been invalidated",
)
# This server holds WAL past the point where the primary's timeline forked off (a former
# primary that wrote on after the fork, seen after a crash even once rewound): it can never
# follow that timeline; only a fresh clone can.
FORKED_BEHIND = "forked off current database system timeline"
RESEED_WHY = {
    "slot invalidated": "the primary no longer has the WAL this replica needs (its slot was "
    "invalidated, max_slot_wal_keep_size)",
    "ahead of the primary's timeline": "this server has WAL past the point where the "
    "primary's timeline forked off (writes the primary never had)",
}


def ensure_primary_ca(params: dict) -> bool:
    """The CA that issued the primary's certificate: replication verifies it (verify-full)."""
    return write_if_changed(PRIMARY_CA, params["primary_ca_cert"], mode=0o644, owner="postgres")


def ensure_pgpass(params: dict) -> bool:
    """~postgres/.pgpass (0600): the replication password, for streaming and for pg_rewind."""
    where = (params["primary_address"], params["primary_port"])
    ours, prefixes = [], []
    for database in ("replication", "postgres"):
        user = params["replication_user"]
        prefixes.append(pgpass_line(*where, database, user, ""))
        ours.append(pgpass_line(*where, database, user, params["replication_password"]))
    old = PGPASS.read_text().splitlines() if PGPASS.exists() else []
    lines = [line for line in old if not line.startswith(tuple(prefixes))] + ours
    return write_if_changed(PGPASS, "\n".join(lines) + "\n", mode=0o600, owner="postgres")


def identify_primary(params: dict) -> tuple[str, dict[str, str]]:
    """The primary's system identifier and its PRIMARY_SETTINGS, read over one replication
    connection (proves the password, the pg_hba entry for this host and TLS at once)."""
    shows = [arg for key in PRIMARY_SETTINGS for arg in ("-c", f"SHOW {key};")]
    argv = as_postgres(
        [
            "psql",
            "-X",
            "-A",
            "-t",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "IDENTIFY_SYSTEM;",
            *shows,
            f"{conninfo(params)} dbname=replication replication=true",
        ]
    )
    result = run(argv, check=False, timeout=30)
    lines = result.stdout.splitlines()
    if result.returncode == 0 and len(lines) == 1 + len(PRIMARY_SETTINGS):
        return lines[0].split("|")[0].strip(), dict(zip(PRIMARY_SETTINGS, lines[1:], strict=True))
    err = result.stderr.strip()
    where = f"{params['primary_address']}:{params['primary_port']}"
    if "password authentication failed" in err:
        hint = (
            f"the primary rejected the password of {params['replication_user']}: set the same "
            "mastodon-data:replicationPassword for the whole stack and run again"
        )
    elif "certificate verify failed" in err or "does not match host name" in err:
        hint = (
            f"the server at {where} presents a certificate not issued by this stack's CA for "
            "that address: it is not this stack's primary (or its certificate was replaced)"
        )
    elif "no pg_hba.conf entry" in err:
        hint = (
            f"the primary has no pg_hba entry for this host ({params['private_address']}): "
            "run the primary step with this replica listed"
        )
    elif "Connection refused" in err or "timeout expired" in err or "could not connect" in err:
        hint = (
            f"the primary at {where} is not reachable: start it (or fix its address) and run again"
        )
    else:
        hint = "see the error above"
    raise HostError(f"cannot open a replication connection to {where}: {err} -> {hint}")


def slot_sql(name: str) -> list[str]:
    """Drops the slot when max_slot_wal_keep_size invalidated it (the replica then re-seeds,
    log_says_reseed) and creates it when missing; prints how many were dropped, then the name if
    created. The replication role may (REPLICATION); no other slot is touched."""
    where = f"slot_name = '{name}'"
    return [
        "SELECT count(*) FROM (SELECT pg_drop_replication_slot(slot_name) FROM "
        f"pg_replication_slots WHERE {where} AND wal_status = 'lost' AND NOT active) AS dropped;",
        f"SELECT CASE WHEN NOT EXISTS (SELECT FROM pg_replication_slots WHERE {where}) "
        f"THEN (pg_create_physical_replication_slot('{name}')).slot_name END;",
    ]


def ensure_slot(params: dict) -> str | None:
    """This replica's slot on the primary, made by the replica itself: adding a replica needs
    nothing from the primary's step, and the step that prunes slots (slots.py) never touches a
    configured one. Returns what changed, or None."""
    name = slot_name(params["name"])
    commands = [arg for sql in slot_sql(name) for arg in ("-c", sql)]
    argv = ["psql", "-X", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", *commands]
    result = run(as_postgres([*argv, f"{conninfo(params)} dbname=postgres"]), check=False)
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) != 2:
        raise HostError(
            f"cannot make slot {name} on the primary at {params['primary_address']}: "
            f"{result.stderr.strip()} -> the replication role needs a pg_hba entry for database "
            "postgres from this host (the primary step writes it): run the primary step again"
        )
    if lines[0] != "0":
        return f"slot {name} recreated (it was invalidated: this replica re-seeds)"
    return f"slot {name} created" if lines[1] == name else None


def has_user_data(cluster: Cluster) -> bool:
    if not cluster.running():
        cluster.start()
        cluster.wait_ready()
    count = cluster.sql(
        "SELECT count(*) FROM pg_database WHERE datname NOT IN "
        "('postgres', 'template0', 'template1');"
    )
    return int(count) > 0


def base_backup(cluster: Cluster, params: dict) -> Path:
    """pg_basebackup into a scratch directory beside the data directory; returns it when
    complete (a failed or interrupted copy never replaces anything)."""
    scratch = cluster.datadir.with_name(f"{cluster.datadir.name}.clone")
    if scratch.exists():
        log("removing an interrupted base backup")
        shutil.rmtree(scratch)
    if not scratch.parent.exists():  # /var/lib/postgresql/<version>, as pg_createcluster makes it
        scratch.parent.mkdir(mode=0o755)
        shutil.chown(scratch.parent, "postgres", "postgres")
    log(f"base backup from {params['primary_address']} (slot {slot_name(params['name'])})")
    argv = as_postgres(
        [
            str(cluster.bindir / "pg_basebackup"),
            "-D",
            str(scratch),
            "-X",
            "stream",
            "-c",
            "fast",
            "-w",
            "-S",
            slot_name(params["name"]),
            "-d",
            conninfo(params),
        ]
    )
    result = run(argv, check=False)
    if result.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        err = result.stderr.strip()
        hint = (
            "its slot was dropped meanwhile (is this replica still configured?): run again"
            if "does not exist" in err
            else "fix the cause and run again; the old data directory is untouched"
        )
        raise HostError(f"base backup from {params['primary_address']} failed: {err} -> {hint}")
    make_standby(scratch, params)
    return scratch


def swap_in(cluster: Cluster, scratch: Path) -> None:
    """The complete copy becomes the data directory; the old one (if any) goes."""
    old = cluster.datadir.with_name(f"{cluster.datadir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if cluster.datadir.exists():
        os.replace(cluster.datadir, old)
    os.replace(scratch, cluster.datadir)
    os.chmod(cluster.datadir, 0o700)
    shutil.rmtree(old, ignore_errors=True)


def clone(cluster: Cluster, params: dict) -> None:
    """Replaces the data directory of this host's cluster with a fresh copy of the primary."""
    cluster.stop()
    swap_in(cluster, base_backup(cluster, params))


def seed(cluster: Cluster, params: dict, primary_id: str, primary_conf: dict[str, str]) -> str:
    """A host without the cluster: the clone, with its configuration files, becomes the data
    directory and pg_createcluster registers it (no initdb of a directory thrown away)."""
    if cluster.datadir.exists() and any(cluster.datadir.iterdir()):
        local_id = cluster.system_identifier()
        if local_id == primary_id and (cluster.datadir / "standby.signal").exists():
            # A complete clone from an earlier run stopped before its registration.
            write_initial_config(cluster, cluster.datadir, primary_conf)
            make_standby(cluster.datadir, params)
            cluster.adopt()
            return "registered (clone of an earlier run)"
        if not params["reseed"]:
            raise HostError(
                f"{cluster.datadir} holds data that no cluster configuration claims (system "
                f"identifier {local_id or 'unknown'}, the primary's is {primary_id}); it was "
                "left untouched. To wipe it and clone the primary: pulumi config set --path "
                f"'mastodon-data:reseedReplicas[0]' {params['name']}, run again, then remove "
                "the setting"
            )
    scratch = base_backup(cluster, params)
    write_initial_config(cluster, scratch, primary_conf)
    swap_in(cluster, scratch)
    cluster.adopt()
    return "cloned"


def rewind(cluster: Cluster, params: dict) -> str:
    """A former primary back as a replica: pg_rewind to the new primary's timeline (wal_log_hints
    is on from the start), falling back to a fresh clone when the rewind is impossible."""
    cluster.stop()
    source = conninfo(params).replace(f"application_name={params['name']} ", "")
    argv = as_postgres(
        [
            str(cluster.bindir / "pg_rewind"),
            f"--target-pgdata={cluster.datadir}",
            f"--source-server={source} dbname=postgres",
            f"--config-file={cluster.confdir / 'postgresql.conf'}",
            "--write-recovery-conf",
        ]
    )
    result = run(argv, check=False)
    if result.returncode == 0:
        make_standby(cluster.datadir, params)  # our conninfo in place of pg_rewind's
        return "rewound (former primary)"
    log(f"pg_rewind failed ({result.stderr.strip().splitlines()[-1:]}); cloning instead")
    clone(cluster, params)
    return "re-seeded (former primary, pg_rewind impossible)"


def write_hba(cluster: Cluster, params: dict) -> bool:
    lines = app_hba_lines(params)
    path = cluster.confdir / "pg_hba.conf"
    return write_if_changed(
        path, replace_managed_block(path.read_text(), lines), mode=0o640, owner="postgres"
    )


def ensure_upstream(cluster: Cluster, params: dict) -> bool:
    """Points the standby at the configured primary and slot (they may have moved)."""
    wanted = upstream(params)
    current = cluster.sql_json(
        "SELECT " + ", ".join(f"current_setting('{key}') AS {key}" for key in wanted)
    )[0]
    changed = False
    for key, value in wanted.items():
        if current[key] != value:
            cluster.sql(f"ALTER SYSTEM SET {key} = '{value}';")
            changed = True
    if changed:
        cluster.ctl("reload")
    return changed


def receiver_status(cluster: Cluster) -> str | None:
    out = cluster.sql("SELECT status FROM pg_stat_wal_receiver;")
    return out or None


def server_log(cluster: Cluster) -> Path:
    return cluster.log_file


def log_size(cluster: Cluster) -> int:
    path = server_log(cluster)
    return path.stat().st_size if path.exists() else 0


def log_says_reseed(cluster: Cluster, since: int) -> str | None:
    """Why the server, after offset `since`, can never stream from the primary as it is (its WAL
    is gone upstream, or it is ahead of the primary's timeline), or None."""
    path = server_log(cluster)
    if not path.exists():
        return None
    with path.open("rb") as handle:
        handle.seek(max(since, path.stat().st_size - LOG_TAIL_BYTES))
        tail = handle.read().decode(errors="replace")
    if FORKED_BEHIND in tail:
        return "ahead of the primary's timeline"
    return "slot invalidated" if any(marker in tail for marker in NEEDS_RESEED) else None


def wait_streaming(cluster: Cluster, seconds: float, since: int) -> str:
    """ "streaming", why it needs a re-seed (log_says_reseed), or "timeout"."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if receiver_status(cluster) == "streaming":
            return "streaming"
        reason = log_says_reseed(cluster, since)
        if reason:
            return reason
        time.sleep(POLL)
    return "timeout"


def configure_and_start(cluster: Cluster, params: dict) -> str:
    touched = ensure_certificate(cluster, params["private_address"], None, params)
    touched |= write_settings(cluster, server_settings(cluster, params))
    touched |= write_hba(cluster, params)
    action = apply_settings(cluster, touched)
    if ensure_upstream(cluster, params) and action == "unchanged":
        action = "repointed"
    return action


def match_primary(cluster: Cluster, params: dict, primary_id: str) -> str | None:
    """Makes the local cluster one of the primary's standbys when it is not: a clone of another
    primary's data (asked for, or holding nothing), a rewind of a former primary (asked for).
    Returns what was done, or None."""
    local_id = cluster.system_identifier()
    standby = (cluster.datadir / "standby.signal").exists()
    if local_id != primary_id:
        keep = local_id and (standby or has_user_data(cluster))
        if keep and not params["reseed"]:
            raise HostError(
                f"this host holds a cluster of another primary (system identifier {local_id}, "
                f"the primary's is {primary_id}); it was left untouched. To wipe it and clone "
                "the primary: pulumi config set --path 'mastodon-data:reseedReplicas[0]' "
                f"{params['name']}, run again, then remove the setting"
            )
        clone(cluster, params)
        return "re-seeded (other primary)" if keep else "cloned"
    if standby:
        return None
    if not params["reseed"]:
        raise HostError(
            "this host's cluster has the primary's system identifier but is not a standby: "
            "it is a former primary (or was promoted) and may hold writes the primary lacks. "
            "To rewind it onto the current primary (pg_rewind): mastodon-data failover "
            f"--stack <stack> rejoin {params['name']} (or pulumi config set --path "
            f"'mastodon-data:reseedReplicas[0]' {params['name']}, run again, then remove the "
            "setting)"
        )
    return rewind(cluster, params)


def main() -> dict:
    params = read_params()
    cluster = Cluster(params["postgres_version"], params["port"])
    wait = STREAM_WAIT
    changed = []
    if cluster.install():
        changed.append("installed")
    if ensure_pgpass(params):
        changed.append("pgpass written")
    if ensure_primary_ca(params):
        changed.append("primary CA written")
    primary_id, primary_conf = identify_primary(params)
    slot = ensure_slot(params)
    if slot:
        changed.append(slot)
    if not cluster.exists():
        changed.append(seed(cluster, params, primary_id, primary_conf))
    matched = match_primary(cluster, params, primary_id)
    if matched:
        changed.append(matched)
    since = log_size(cluster)
    action = configure_and_start(cluster, params)
    if action != "unchanged":
        changed.append(f"server {action}")
    state = wait_streaming(cluster, wait, since)
    if state in RESEED_WHY:
        log(f"{RESEED_WHY[state]}: re-seeding it")
        clone(cluster, params)
        since = log_size(cluster)
        configure_and_start(cluster, params)
        changed.append(f"re-seeded ({state})")
        state = wait_streaming(cluster, wait, since)
    if state != "streaming":
        raise HostError(
            f"the replica is not streaming after {wait:.0f} s "
            f"(wal receiver: {receiver_status(cluster) or 'not running'}); see "
            f"{server_log(cluster)}"
        )
    for line in changed:
        log(line)
    started = cluster.sql("SELECT pg_postmaster_start_time()::text;")
    return {
        "role": "replica",
        "changed": changed,
        "system_identifier": cluster.system_identifier(),
        "postmaster_start_time": started,
        "streaming": True,
    }


if __name__ == "__main__":
    main_wrapper(main)
