"""pgBackRest on this host: its configuration (the repository in object storage, encrypted)
and running it as postgres. Shared by backup.py, restore.py and status.py; stdlib only.

Parameters (JSON on stdin): RepositoryParams (mastodon_data/host_params.py), and the secrets
backup_access_key_id, backup_secret_access_key, backup_cipher_passphrase, which go into
pgbackrest.conf (0640 root:postgres) and nowhere else.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from common import APT_LOCK_WAIT, HostError, as_postgres, log, run, write_if_changed

CONF_DIR = Path("/etc/pgbackrest")
CONF = CONF_DIR / "pgbackrest.conf"
CA_FILE = CONF_DIR / "repository-ca.crt"
# Locks in a directory of pgBackRest's own rather than the default /tmp/pgbackrest.
LOCK_PATH = "/var/lib/pgbackrest/lock"
# archive_command's longest wait for the repository (pgBackRest's archive-timeout, with
# archive-async): then it fails and PostgreSQL counts the failure. A synchronous archive-push
# retries an unreachable store for about 8 x io-timeout (8 min), and counts nothing meanwhile.
ARCHIVE_PUSH_TIMEOUT = 60
PGBACKREST = "/usr/bin/pgbackrest"
BACKUP_TIMEOUT = 6 * 3600  # seconds for one backup or restore of a large database
STANZA_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# WAL not yet in the repository: from the end of the last archived file (timeline, log and
# segment in its name) to the current write position. The current, incomplete file always
# waits (it goes when full, or after archive_timeout); while a COMPLETE file waits too, the
# archiver is behind, and lag_seconds is how long ago it last succeeded (else 0; never the
# idle time of a quiet primary).
ARCHIVE_QUERY = """SELECT archived_count, failed_count, last_archived_wal,
    last_archived_time::text, last_failed_wal, last_failed_time::text, lag_bytes,
    CASE WHEN lag_bytes > segment THEN extract(epoch FROM now() - last_archived_time)::float
         ELSE 0 END AS lag_seconds
    FROM pg_stat_archiver,
    LATERAL (SELECT setting::bigint AS segment FROM pg_settings
             WHERE name = 'wal_segment_size') AS s,
    LATERAL (SELECT pg_wal_lsn_diff(pg_current_wal_lsn(),
        '0/0'::pg_lsn + (('x' || substr(last_archived_wal, 9, 8))::bit(32)::bigint * 4294967296
          + (('x' || substr(last_archived_wal, 17, 8))::bit(32)::bigint + 1) * segment
        )::numeric)::bigint AS lag_bytes) AS lag"""


def install() -> bool:
    """Debian's pgbackrest package (also in Ubuntu); False when it is there."""
    if Path(PGBACKREST).exists():
        return False
    log("installing pgbackrest")
    apt = ["apt-get", "-q", "-y", "-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT}"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(apt + ["update"], env=env)
    run(apt + ["install", "--no-install-recommends", "pgbackrest"], env=env)
    return True


def endpoint_parts(endpoint: str) -> tuple[str, int]:
    """host[:port] -> (host, port); HTTPS's 443 by default."""
    host, _, port = endpoint.partition(":")
    return host, int(port or 443)


def conf_text(params: dict, version: int, port: int) -> str:
    """pgbackrest.conf: one S3 repository (path style, any S3-compatible store such as Spaces),
    encrypted, with the retention; the stanza is this host's cluster."""
    host, tls_port = endpoint_parts(params["backup_endpoint"])
    lines = [
        "# Written by mastodon-data; changes here are overwritten on the next run.",
        "[global]",
        "repo1-type=s3",
        f"repo1-s3-endpoint={host}",
        f"repo1-storage-port={tls_port}",
        f"repo1-s3-bucket={params['backup_bucket']}",
        f"repo1-s3-region={params['backup_region']}",
        "repo1-s3-uri-style=path",
        f"repo1-s3-key={params['backup_access_key_id']}",
        f"repo1-s3-key-secret={params['backup_secret_access_key']}",
        f"repo1-path={params['backup_path']}",
        # Small files bundled into few objects: a request per file is what makes an object
        # store slow (a lab full backup: 17 s bundled, 63 s not; pgBackRest 2.39+).
        "repo1-bundle=y",
        "repo1-cipher-type=aes-256-cbc",
        f"repo1-cipher-pass={params['backup_cipher_passphrase']}",
        f"repo1-retention-full={int(params['backup_retention_full'])}",
        f"repo1-retention-diff={int(params['backup_retention_diff'])}",
        "process-max=2",
        "compress-type=zst",
        "start-fast=y",
        # archive_command hands the WAL file to a background push (spool: /var/spool/pgbackrest,
        # Debian's) and fails after ARCHIVE_PUSH_TIMEOUT without it; no archive-push-queue-max:
        # WAL is never dropped.
        "archive-async=y",
        f"archive-timeout={ARCHIVE_PUSH_TIMEOUT}",
        f"lock-path={LOCK_PATH}",
        "log-level-console=warn",
        "log-level-file=info",
    ]
    if params["backup_ca_cert"]:
        lines.append(f"repo1-storage-ca-file={CA_FILE}")
    lines += [
        "",
        f"[{params['stanza']}]",
        f"pg1-path=/var/lib/postgresql/{version}/main",
        f"pg1-port={port}",
        "pg1-socket-path=/var/run/postgresql",
        "",
    ]
    return "\n".join(lines)


def check_params(params: dict) -> None:
    if not STANZA_RE.match(str(params["stanza"])):
        raise HostError(f"stanza {params['stanza']!r} is not a plain name")
    for key in ("backup_access_key_id", "backup_secret_access_key", "backup_cipher_passphrase"):
        value = params[key]
        if not value or not value.isprintable() or any(c.isspace() for c in value):
            raise HostError(f"{key} is empty or holds whitespace or control characters")


def write_conf(params: dict, version: int, port: int) -> bool:
    """The configuration (0640 root:postgres: it holds the repository's key and passphrase) and
    the repository's CA; True when either changed."""
    check_params(params)
    CONF_DIR.mkdir(mode=0o750, exist_ok=True)
    shutil.chown(CONF_DIR, "root", "postgres")
    changed = False
    ca = params["backup_ca_cert"]
    if ca:
        changed |= write_if_changed(CA_FILE, ca if ca.endswith("\n") else ca + "\n")
    changed |= write_if_changed(CONF, conf_text(params, version, port), mode=0o640)
    shutil.chown(CONF, "root", "postgres")
    return changed


def pgbackrest(stanza: str, *args: str, check: bool = True, timeout: float = 600):
    """pgbackrest as postgres (its repository key is in a file only postgres and root read)."""
    argv = as_postgres([PGBACKREST, f"--stanza={stanza}", *args])
    return run(argv, check=check, timeout=timeout)


def failure(result, limit: int) -> str:
    """Why pgbackrest failed: its errors are console log lines on stdout (stderr stays empty
    with log-level-console set), the last `limit` characters."""
    text = (result.stderr.strip() or result.stdout.strip())[-limit:]
    return text or f"exit code {result.returncode}"


def info(stanza: str) -> dict:
    """`pgbackrest info --output=json` of the stanza ({} when it cannot be read)."""
    result = pgbackrest(stanza, "info", "--output=json", check=False, timeout=120)
    if result.returncode != 0:
        return {"error": failure(result, 500)}
    listed = json.loads(result.stdout or "[]")
    return listed[0] if listed else {}


def summary(stanza_info: dict) -> dict:
    """What an operator reads: the stanza's status, its backups (newest last) and WAL range."""
    if "error" in stanza_info:
        return {"status": "unreadable", "error": stanza_info["error"]}
    backups = [
        {
            "label": b["label"],
            "type": b["type"],
            "started": b["timestamp"]["start"],
            "stopped": b["timestamp"]["stop"],
            "size_bytes": b["info"]["size"],
            "repo_bytes": b["info"]["repository"]["delta"],
        }
        for b in stanza_info.get("backup", [])
    ]
    archives = [a for a in stanza_info.get("archive", []) if a.get("max")]
    return {
        "status": stanza_info.get("status", {}).get("message", "missing"),
        "backups": backups,
        "last_backup": backups[-1] if backups else None,
        "wal_min": archives[0]["min"] if archives else None,
        "wal_max": archives[-1]["max"] if archives else None,
    }


def archive_status(cluster) -> dict:
    """The primary's WAL archiver: counts, last archived and failed files, lag."""
    return cluster.sql_json(ARCHIVE_QUERY)[0]
