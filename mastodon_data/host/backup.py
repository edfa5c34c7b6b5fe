#!/usr/bin/env python3
"""Backups of this host's cluster with pgBackRest to the stack's object storage. Idempotent.

`action` configure (the stack's step on every host): pgbackrest.conf, WAL archiving
(archive_mode needs a restart, done only when it changes, and said in the report), the timers
of the scheduled full and differential backups; on the primary the stanza is created and
`pgbackrest check` proves that WAL reaches the repository. A replica gets the same, so it
archives and backs up once promoted.
`action` backup (`mastodon-data backup`): one backup of `type` full|diff|incr, on the primary.

stdin (JSON): BackupParams (mastodon_data/host_params.py) and the repository's secrets (see
repository.py).
"""

from __future__ import annotations

import time
from pathlib import Path

from common import (
    Cluster,
    HostError,
    log,
    main_wrapper,
    read_params,
    run,
    systemd_running,
    write_if_changed,
)
from pooler import running as pooler_running
from repository import (
    BACKUP_TIMEOUT,
    PGBACKREST,
    archive_status,
    failure,
    install,
    pgbackrest,
    summary,
    write_conf,
)
from repository import info as stanza_info
from switchover import pause, resume

UNIT_DIR = Path("/etc/systemd/system")
SETTINGS_FILE = "mastodon-data-backup.conf"
BACKUP_TYPES = ("full", "diff", "incr")
# stanza-create takes every pgBackRest lock; the async archive-push holds the archive lock while
# it pushes (a new primary has its history file and partial segment to push), and a lock held
# fails stanza-create at once with error 50: it is asked again meanwhile.
LOCK_HELD = 50  # pgBackRest's exit code for [050] LockAcquireError
STANZA_LOCK_WAIT = 120  # seconds


def archive_settings(params: dict) -> dict[str, str]:
    return {
        "archive_mode": "on",
        "archive_command": f"'{PGBACKREST} --stanza={params['stanza']} archive-push %p'",
        # A quiet server still hands a WAL file over at least this often (the archive lag's
        # bound when nothing fills a segment).
        "archive_timeout": f"'{params['backup_archive_timeout']}'",
    }


def write_archive_settings(cluster: Cluster, params: dict) -> bool:
    settings = archive_settings(params)
    content = "# Written by mastodon-data (backups); changes here are overwritten.\n" + "".join(
        f"{key} = {value}\n" for key, value in sorted(settings.items())
    )
    return write_if_changed(cluster.confdir / "conf.d" / SETTINGS_FILE, content, owner="postgres")


def apply_archive_settings(cluster: Cluster, params: dict, changed: bool) -> str:
    """Reload; restart only when a setting waits for one (archive_mode on its first run)."""
    # A restore rehearsal's `--archive-mode=off` sits in postgresql.auto.conf and would win.
    if cluster.sql("SELECT count(*) FROM pg_file_settings WHERE name = 'archive_mode' "
                   "AND sourcefile LIKE '%postgresql.auto.conf';") != "0":  # fmt: skip
        cluster.sql("ALTER SYSTEM RESET archive_mode;")
        changed = True
    if not changed:
        return "unchanged"
    cluster.ctl("reload")
    time.sleep(0.5)  # the postmaster applies a reload asynchronously
    if cluster.sql("SELECT count(*) FROM pg_settings WHERE pending_restart;") != "0":
        log("restarting PostgreSQL: archive_mode changes only with a restart")
        restart_paused(cluster, params)
        return "restarted"
    return "reloaded"


def restart_paused(cluster: Cluster, params: dict) -> None:
    """The restart inside a pause of this server's running PgBouncer (Mastodon's database and
    its read pool), so their clients wait instead of failing: backups turned on for a running
    server, or a blue/green upgrade's new primary at retirement."""
    paused = bool(params["databases"]) and pooler_running()
    if paused:
        pause(params)
    try:
        cluster.ctl("restart")
        cluster.wait_ready()
    finally:
        if paused:
            resume(params)


def unit_files(params: dict) -> dict[str, str]:
    """A service and a timer per scheduled backup type. The service runs only where the
    cluster is the primary (ExecCondition), so after a failover the new primary's timers take
    over without a change here."""
    stanza, version, port = params["stanza"], params["postgres_version"], params["port"]
    schedules = {"full": params["backup_full_schedule"], "diff": params["backup_diff_schedule"]}
    is_primary = (
        f"/usr/lib/postgresql/{version}/bin/psql -X -A -t -p {port} -d postgres "
        "-c 'SELECT pg_is_in_recovery()' | grep -qx f"
    )
    files = {}
    for kind, schedule in schedules.items():
        name = f"mastodon-data-backup-{kind}"
        files[f"{name}.service"] = "\n".join(
            [
                "[Unit]",
                f"Description=mastodon-data: pgBackRest {kind} backup of stanza {stanza}",
                "After=network-online.target postgresql.service",
                "Wants=network-online.target",
                "",
                "[Service]",
                "Type=oneshot",
                "User=postgres",
                "Group=postgres",
                f'ExecCondition=/bin/sh -c "{is_primary}"',
                f"ExecStart={PGBACKREST} --stanza={stanza} --type={kind} backup",
                f"TimeoutStartSec={BACKUP_TIMEOUT}",
                "Nice=10",
                "IOSchedulingClass=best-effort",
                "IOSchedulingPriority=7",
                "",
            ]
        )
        files[f"{name}.timer"] = "\n".join(
            [
                "[Unit]",
                f"Description=mastodon-data: scheduled pgBackRest {kind} backup",
                "",
                "[Timer]",
                f"OnCalendar={schedule}",
                "Persistent=true",
                "RandomizedDelaySec=5min",
                "",
                "[Install]",
                "WantedBy=timers.target",
                "",
            ]
        )
    return files


def install_timers(params: dict) -> tuple[bool, str]:
    """(unit files changed, what systemd did): enabled where systemd runs, else only written."""
    changed = False
    files = unit_files(params)
    for name, content in files.items():
        changed |= write_if_changed(UNIT_DIR / name, content)
    if not systemd_running():
        return changed, "written (no systemd here)"
    if changed:
        run(["systemctl", "daemon-reload"])
    timers = [name for name in files if name.endswith(".timer")]
    run(["systemctl", "enable", "--now", *timers])
    return changed, "enabled"


def ensure_stanza(params: dict) -> str:
    """stanza-create (a no-op on a valid stanza) and `check`: a WAL file switched and archived
    (the check fails within pgBackRest's archive timeout, 60 s, when archiving does not work)."""
    stanza = params["stanza"]
    deadline = time.monotonic() + STANZA_LOCK_WAIT
    result = pgbackrest(stanza, "stanza-create", check=False)
    while result.returncode == LOCK_HELD and time.monotonic() < deadline:
        time.sleep(1)
        result = pgbackrest(stanza, "stanza-create", check=False)
    upgraded = result.returncode != 0 and upgrade_stanza(params)
    if result.returncode != 0 and not upgraded:
        raise HostError(f"pgbackrest stanza-create failed: {failure(result, 800)}")
    pgbackrest(stanza, "check", timeout=300)
    return "upgraded and checked" if upgraded else "checked"


def upgrade_stanza(params: dict) -> bool:
    """After a blue/green major upgrade the stanza holds the retired servers' older version:
    it goes on with this cluster's (pgBackRest's stanza-upgrade; the older backups stay
    restorable). A stanza of the same or a newer version is another cluster's: refused."""
    stanza, version = params["stanza"], int(params["postgres_version"])
    known = [int(db["version"]) for db in stanza_info(stanza).get("db", [])]
    if not known or max(known) >= version:
        return False
    log(f"stanza {stanza}: PostgreSQL {max(known)} -> {version} (stanza-upgrade)")
    pgbackrest(stanza, "stanza-upgrade", timeout=300)
    return True


def configure(params: dict, cluster: Cluster) -> dict:
    changed = []
    if install():
        changed.append("pgbackrest installed")
    if write_conf(params, cluster.version, cluster.port):
        changed.append("pgbackrest.conf written")
    server = apply_archive_settings(cluster, params, write_archive_settings(cluster, params))
    if server != "unchanged":
        changed.append(f"WAL archiving on: server {server}")
    units_changed, timers = install_timers(params)
    if units_changed:
        changed.append("backup timers written")
    report = {"role": params["role"], "changed": changed, "restarted": server == "restarted",
              "timers": timers}  # fmt: skip
    if params["role"] == "primary":
        report["stanza"] = ensure_stanza(params)
    for line in changed:
        log(line)
    return report


def backup(params: dict, cluster: Cluster) -> dict:
    kind = params["type"]
    if kind not in BACKUP_TYPES:
        raise HostError(f"backup type {kind!r} is not one of {', '.join(BACKUP_TYPES)}")
    if cluster.sql("SELECT pg_is_in_recovery();") != "f":
        raise HostError("this host is a standby: back up on the primary")
    log(f"pgbackrest {kind} backup")
    start = time.monotonic()
    pgbackrest(params["stanza"], f"--type={kind}", "backup", timeout=BACKUP_TIMEOUT)
    seconds = round(time.monotonic() - start, 2)
    return {"action": "backup", "type": kind, "seconds": seconds,
            **summary(stanza_info(params["stanza"]))}  # fmt: skip


def check(params: dict, cluster: Cluster) -> dict:
    """`pgbackrest check` (a WAL file switched and archived, the repository readable), the
    repository's backups and the archiver's lag; `healthy` says whether all of it is fine."""
    if cluster.sql("SELECT pg_is_in_recovery();") != "f":
        raise HostError("this host is a standby: check on the primary")
    result = pgbackrest(params["stanza"], "check", check=False, timeout=300)
    report = {"action": "check", "check": "ok" if result.returncode == 0 else "failed"}
    if result.returncode != 0:
        report["check_error"] = failure(result, 800)
    report |= summary(stanza_info(params["stanza"]))
    report["archive"] = archive_status(cluster)
    report["healthy"] = report["check"] == "ok" and report["last_backup"] is not None
    return report


def main() -> dict:
    params = read_params()
    cluster = Cluster(params["postgres_version"], params["port"])
    if not (cluster.exists() and cluster.running()):
        raise HostError(f"PostgreSQL {cluster.version}/main is not running here: run the "
                        "primary or replica step first")  # fmt: skip
    if params["action"] == "configure":
        return configure(params, cluster)
    if params["action"] == "backup":
        if install() or write_conf(params, cluster.version, cluster.port):
            log("pgbackrest configuration written")
        return backup(params, cluster)
    if params["action"] == "check":
        return check(params, cluster)
    raise HostError(f"unknown action {params['action']!r} (configure, backup, check)")


if __name__ == "__main__":
    main_wrapper(main)
