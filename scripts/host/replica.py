#!/usr/bin/env python3
"""Makes this host a hot standby streaming from the primary. Idempotent: a healthy replica of
the same primary is never cloned again; one of another primary is refused unless `reseed`.

stdin (JSON): version, port, name, private_address, primary_address, primary_port,
replication_user, replication_password, db_name, db_user, allowed_sources [CIDR], replica_count,
wal_keep_size, max_slot_wal_keep_size, primary_ca_cert (PEM, from the primary step's report);
optional reseed (bool), stream_wait_seconds (default 60).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Cluster,
    HostError,
    apply_settings,
    as_postgres,
    ensure_certificate,
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

REQUIRED = [
    "version",
    "port",
    "name",
    "private_address",
    "primary_address",
    "primary_port",
    "replication_user",
    "replication_password",
    "db_name",
    "db_user",
    "allowed_sources",
    "replica_count",
    "wal_keep_size",
    "max_slot_wal_keep_size",
    "primary_ca_cert",
]
PGPASS = Path("/var/lib/postgresql/.pgpass")
PRIMARY_CA = Path("/var/lib/postgresql/primary-ca.crt")
LOG_TAIL_BYTES = 65536
# Walreceiver errors that only a new base backup cures.
NEEDS_RESEED = (
    "has already been removed",
    "can no longer get changes from replication slot",
    "This slot has been invalidated",
)


def conninfo(params: dict) -> str:
    """Replication connection string; the password comes from ~postgres/.pgpass, never from here."""
    return (
        f"host={params['primary_address']} port={params['primary_port']} "
        f"user={params['replication_user']} application_name={params['name']} "
        f"sslmode=verify-full sslrootcert={PRIMARY_CA} connect_timeout=10 passfile={PGPASS}"
    )


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


def identify_primary(params: dict) -> str:
    """The primary's system identifier, read over a replication connection (proves the password,
    the pg_hba entry for this host and TLS at once)."""
    argv = as_postgres(
        [
            "psql",
            "-X",
            "-A",
            "-t",
            "-w",
            "-c",
            "IDENTIFY_SYSTEM;",
            f"{conninfo(params)} dbname=replication replication=true",
        ]
    )
    result = run(argv, check=False, timeout=30)
    if result.returncode == 0:
        return result.stdout.split("|")[0].strip()
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


def has_user_data(cluster: Cluster) -> bool:
    if not cluster.running():
        cluster.start()
        cluster.wait_ready()
    count = cluster.sql(
        "SELECT count(*) FROM pg_database WHERE datname NOT IN "
        "('postgres', 'template0', 'template1');"
    )
    return int(count) > 0


def clone(cluster: Cluster, params: dict) -> None:
    """pg_basebackup into a scratch directory, swapped in only when complete."""
    cluster.stop()
    scratch = cluster.datadir.with_name(f"{cluster.datadir.name}.clone")
    if scratch.exists():
        log("removing an interrupted base backup")
        shutil.rmtree(scratch)
    log(f"base backup from {params['primary_address']} (slot {slot_name(params['name'])})")
    argv = as_postgres(
        [
            str(cluster.bindir / "pg_basebackup"),
            "-D",
            str(scratch),
            "-R",
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
            "run the primary step first (it creates the slot)"
            if "does not exist" in err
            else "fix the cause and run again; the old data directory is untouched"
        )
        raise HostError(f"base backup from {params['primary_address']} failed: {err} -> {hint}")
    old = cluster.datadir.with_name(f"{cluster.datadir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if cluster.datadir.exists():
        os.replace(cluster.datadir, old)
    os.replace(scratch, cluster.datadir)
    os.chmod(cluster.datadir, 0o700)
    shutil.rmtree(old, ignore_errors=True)


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
        return "rewound (former primary)"
    log(f"pg_rewind failed ({result.stderr.strip().splitlines()[-1:]}); cloning instead")
    clone(cluster, params)
    return "re-seeded (former primary, pg_rewind impossible)"


def write_hba(cluster: Cluster, params: dict) -> bool:
    lines = [
        f"hostssl {params['db_name']} {params['db_user']} {ipaddress.ip_network(s)} scram-sha-256"
        for s in params["allowed_sources"]
    ]
    path = cluster.confdir / "pg_hba.conf"
    return write_if_changed(
        path, replace_managed_block(path.read_text(), lines), mode=0o640, owner="postgres"
    )


def ensure_upstream(cluster: Cluster, params: dict) -> bool:
    """Points the standby at the configured primary and slot (they may have moved)."""
    wanted = {"primary_conninfo": conninfo(params), "primary_slot_name": slot_name(params["name"])}
    changed = False
    for key, value in wanted.items():
        if cluster.sql(f"SHOW {key};") != value:
            cluster.sql(f"ALTER SYSTEM SET {key} = '{value}';")
            changed = True
    if changed:
        cluster.ctl("reload")
    return changed


def receiver_status(cluster: Cluster) -> str | None:
    out = cluster.sql("SELECT status FROM pg_stat_wal_receiver;")
    return out or None


def server_log(cluster: Cluster) -> Path:
    return Path(f"/var/log/postgresql/postgresql-{cluster.version}-{cluster.name}.log")


def log_size(cluster: Cluster) -> int:
    path = server_log(cluster)
    return path.stat().st_size if path.exists() else 0


def log_says_reseed(cluster: Cluster, since: int) -> bool:
    """Whether the server logged, after offset `since`, that its WAL is gone upstream."""
    path = server_log(cluster)
    if not path.exists():
        return False
    with path.open("rb") as handle:
        handle.seek(max(since, path.stat().st_size - LOG_TAIL_BYTES))
        tail = handle.read().decode(errors="replace")
    return any(marker in tail for marker in NEEDS_RESEED)


def wait_streaming(cluster: Cluster, seconds: float, since: int) -> str:
    """ "streaming", "needs reseed" (the primary removed WAL this replica needs) or "timeout"."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if receiver_status(cluster) == "streaming":
            return "streaming"
        if log_says_reseed(cluster, since):
            return "needs reseed"
        time.sleep(0.5)
    return "timeout"


def configure_and_start(cluster: Cluster, params: dict) -> str:
    touched = ensure_certificate(cluster, params["private_address"])
    touched |= write_settings(cluster, server_settings(cluster, params, params["replica_count"]))
    touched |= write_hba(cluster, params)
    action = apply_settings(cluster, touched)
    if ensure_upstream(cluster, params) and action == "unchanged":
        action = "repointed"
    return action


def main() -> dict:
    params = read_params(REQUIRED)
    cluster = Cluster(params["version"], params["port"])
    wait = float(params.get("stream_wait_seconds", 60))
    changed = []
    if cluster.install():
        changed.append("installed")
    if ensure_pgpass(params):
        changed.append("pgpass written")
    if ensure_primary_ca(params):
        changed.append("primary CA written")
    primary_id = identify_primary(params)
    fresh = not cluster.exists()
    if fresh:
        cluster.create()
        changed.append("cluster created")
    local_id = cluster.system_identifier()
    standby = (cluster.datadir / "standby.signal").exists()
    if local_id != primary_id:
        keep = local_id and not fresh and (standby or has_user_data(cluster))
        if keep and not params.get("reseed"):
            raise HostError(
                f"this host holds a cluster of another primary (system identifier {local_id}, "
                f"the primary's is {primary_id}); it was left untouched. To wipe it and clone "
                "the primary: pulumi config set --path 'mastodon-data:reseedReplicas[0]' "
                f"{params['name']} (or --reseed {params['name']} with scripts/apply_hosts.py), "
                "run again, then remove the setting"
            )
        clone(cluster, params)
        changed.append("re-seeded (other primary)" if keep else "cloned")
    elif not standby:
        if not params.get("reseed"):
            raise HostError(
                "this host's cluster has the primary's system identifier but is not a standby: "
                "it is a former primary (or was promoted) and may hold writes the primary lacks. "
                "To rewind it onto the current primary (pg_rewind): pulumi config set --path "
                f"'mastodon-data:reseedReplicas[0]' {params['name']} (or --reseed "
                f"{params['name']} with scripts/apply_hosts.py), run again, then remove the setting"
            )
        changed.append(rewind(cluster, params))
    since = log_size(cluster)
    action = configure_and_start(cluster, params)
    if action != "unchanged":
        changed.append(f"server {action}")
    state = wait_streaming(cluster, wait, since)
    if state == "needs reseed":
        log(
            "the primary no longer has the WAL this replica needs (its slot was invalidated, "
            "max_slot_wal_keep_size): re-seeding it"
        )
        clone(cluster, params)
        since = log_size(cluster)
        configure_and_start(cluster, params)
        changed.append("re-seeded (slot invalidated)")
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
