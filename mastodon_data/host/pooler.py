#!/usr/bin/env python3
"""PgBouncer (Debian's package) on every server: two transaction pools of Mastodon's database.
DB_NAME goes to the primary, wherever the client connected, so a client that kept an old
DB_HOST still writes after a switchover or failover; the read pool (REPLICA_DB_NAME) is this
host's own PostgreSQL. Runs after this host's primary or replica step. Idempotent: a second
run changes nothing.

- TLS on both sides. Clients get the PostgreSQL server's own certificate and key (on the
  primary issued by the cluster's CA, which the stack exports). PgBouncer verifies PostgreSQL's
  certificate (verify-full, the private address): the primary's against the CA that issued it
  (the primary step's report), a replica's own self-signed one pinned.
- SCRAM, no clear-text password on disk: the auth file holds the role's SCRAM verifier exactly
  as PostgreSQL stores it (pg_authid), so PgBouncer checks a client's proof and logs in to
  PostgreSQL with the keys that proof yields (SCRAM pass-through).
- Transaction pooling: at most `pool_size` backends from this PgBouncer, both pools together
  (default_pool_size = max_db_connections = max_user_connections).
- A changed file is a RELOAD (1.18 reloads the databases, the auth file and TLS: server
  connections to a changed destination close once released), never a restart, which would
  cut every client off; only the listening settings restart it.

stdin (JSON): PoolerParams (mastodon_data/host_params.py) and the secret db_password, which
never reaches a file: it only tells when this host's PostgreSQL holds the current verifier (a
replica replays the primary's change) and proves the pool end to end, from a 0600 file in a
private directory.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import tempfile
import time
from pathlib import Path

from common import (
    APT_LOCK_WAIT,
    POLL,
    Cluster,
    HostError,
    log,
    main_wrapper,
    pgpass_line,
    read_params,
    run,
    systemd_running,
    verifier_matches,
    write_if_changed,
)
from tls import CA_DIR

PGBOUNCER = Path("/usr/sbin/pgbouncer")
CONF_DIR = Path("/etc/pgbouncer")  # Debian's layout
INI = CONF_DIR / "pgbouncer.ini"
USERLIST = CONF_DIR / "userlist.txt"
SERVER_CA = CONF_DIR / "server-ca.crt"
TLS_STATE = CONF_DIR / "tls.sha256"  # root only: which TLS files the running PgBouncer loaded
PIDFILE = Path("/var/run/postgresql/pgbouncer.pid")
LOGFILE = Path("/var/log/postgresql/pgbouncer.log")
SYSTEMD_DROPIN = Path("/etc/systemd/system/pgbouncer.service.d/mastodon-data.conf")
# Settings PgBouncer reads only when it starts; a change of any other is a reload.
RESTART_KEYS = ("listen_addr", "listen_port", "unix_socket_dir", "pidfile")
AS_POSTGRES = "setpriv --reuid=postgres --regid=postgres --init-groups --"  # util-linux
START_WAIT = 30  # seconds for PgBouncer to listen, or to exit when stopped
VERIFIER_WAIT = 30  # seconds for a replica to replay the primary's new password verifier


def settings(params: dict, cluster: Cluster) -> dict[str, str]:
    """The [pgbouncer] section."""
    return {
        "listen_addr": params["private_address"],
        "listen_port": str(params["pgbouncer_port"]),
        "unix_socket_dir": "/var/run/postgresql",
        "pidfile": str(PIDFILE),
        "logfile": str(LOGFILE),
        "auth_type": "scram-sha-256",
        "auth_file": str(USERLIST),
        "pool_mode": "transaction",
        "default_pool_size": str(params["pool_size"]),
        "max_db_connections": str(params["pool_size"]),
        # Both pools together (one role): this PgBouncer never holds more backends than one pool.
        "max_user_connections": str(params["pool_size"]),
        "min_pool_size": "0",
        "reserve_pool_size": "0",
        # After a failed login PgBouncer fails its clients at once for this long (default 15 s):
        # a pool repointed at a promoted server must not keep failing for the dead one.
        "server_login_retry": "1",
        "max_client_conn": str(params["pgbouncer_max_client_conn"]),
        "client_tls_sslmode": "require",
        "client_tls_cert_file": str(cluster.confdir / "server.crt"),
        "client_tls_key_file": str(cluster.confdir / "server.key"),
        "client_tls_protocols": "secure",
        "server_tls_sslmode": "verify-full",
        "server_tls_ca_file": str(SERVER_CA),
        "server_tls_protocols": "secure",
    } | ({"stats_users": params["monitor_user"]} if params["monitor_user"] else {})


def databases(params: dict, write_host: str) -> dict[str, str]:
    """The [databases] section: DB_NAME to `write_host` (the primary), the read pool here."""
    where = {params["db_name"]: write_host, params["read_db_name"]: params["private_address"]}
    return {
        name: f"host={host} port={params['port']} dbname={params['db_name']}"
        for name, host in where.items()
    }


def ini_text(params: dict, cluster: Cluster, write_host: str | None = None) -> str:
    """pgbouncer.ini; `write_host` in place of the primary (a switchover's new one)."""
    pools = databases(params, write_host or params["primary_address"])
    lines = [
        "; Written by mastodon-data; changes here are overwritten on the next run.",
        "[databases]",
        *(f"{name} = {target}" for name, target in pools.items()),
        "",
        "[pgbouncer]",
        *(f"{key} = {value}" for key, value in settings(params, cluster).items()),
    ]
    return "\n".join(lines) + "\n"


def ini_settings(text: str) -> dict[str, str]:
    """`key = value` lines of an ini text (sections ignored)."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith((";", "#", "[")):
            found[key.strip()] = value.strip()
    return found


def install() -> bool:
    if PGBOUNCER.exists():
        return False
    log("installing pgbouncer")
    apt = ["apt-get", "-q", "-y", "-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT}"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(apt + ["update"], env=env)
    run(apt + ["install", "pgbouncer"], env=env)
    return True


def trust_anchor(cluster: Cluster) -> str:
    """What verifies this host's own PostgreSQL certificate: the cluster's CA where it issued
    it (the primary), else the certificate itself (a replica's, self-signed)."""
    server_crt = cluster.confdir / "server.crt"
    if not server_crt.exists():
        raise HostError(f"{server_crt} is missing: run this host's primary or replica step first")
    ca_crt = CA_DIR / "ca.crt"
    if ca_crt.exists():
        verified = run(
            ["openssl", "verify", "-CAfile", str(ca_crt), str(server_crt)], check=False
        ).returncode
        if verified == 0:
            return ca_crt.read_text()
    return server_crt.read_text()


def current_verifier(cluster: Cluster, params: dict, wait: float) -> str:
    """The role's SCRAM verifier, once it matches the password (a replica may still replay the
    primary's ALTER ROLE)."""
    deadline = time.monotonic() + wait
    while True:
        rows = cluster.sql_json(
            f"SELECT rolpassword FROM pg_authid WHERE rolname = '{params['db_user']}'"
        )
        verifier = rows[0]["rolpassword"] if rows else None
        if verifier_matches(verifier, params["db_password"]):
            return verifier
        if time.monotonic() > deadline:
            raise HostError(
                f"role {params['db_user']} on this host has no SCRAM verifier of the stack's "
                f"dbPassword after {wait:.0f} s: run the primary step (and let this replica "
                "catch up) first"
            )
        time.sleep(POLL)


def monitor_verifier(cluster: Cluster, user: str, wait: float) -> str:
    """The exporters' role's SCRAM verifier (host/monitor.py made it on the primary; a replica
    may still replay it), so pgbouncer_exporter logs in to the admin console as a stats user."""
    deadline = time.monotonic() + wait
    while True:
        rows = cluster.sql_json(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'")
        if rows and (rows[0]["rolpassword"] or "").startswith("SCRAM-SHA-256$"):
            return rows[0]["rolpassword"]
        if time.monotonic() > deadline:
            raise HostError(
                f"role {user} has no SCRAM verifier on this host after {wait:.0f} s: run the "
                "monitor step on the primary (and let this replica catch up) first"
            )
        time.sleep(POLL)


def userlist_text(users: dict[str, str]) -> str:
    """One line per role: its name and SCRAM verifier."""
    return "".join(f'"{user}" "{verifier}"\n' for user, verifier in users.items())


def refresh_user(user: str, verifier: str) -> bool:
    """A role's line of a running PgBouncer's auth file set to `verifier` (the upgrade's seed
    gives Mastodon's role the old primary's), reloaded; nothing without a pool here."""
    if not USERLIST.exists():
        return False
    users = dict(line.split(" ", 1) for line in USERLIST.read_text().splitlines() if line)
    users[f'"{user}"'] = f'"{verifier}"'
    text = "".join(f"{name} {value}\n" for name, value in users.items())
    if not write_if_changed(USERLIST, text, mode=0o600, owner="postgres"):
        return False
    if running():
        reload()
    return True


PEM = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)


def trusted_servers(params: dict, cluster: Cluster, extra: str = "") -> str:
    """server_tls_ca_file: this host's own anchor, the primary's CAs, and `extra` (a
    switchover's new primary, whose certificate is still its own until its primary step), each
    certificate once."""
    parts = [trust_anchor(cluster), params["primary_ca_cert"], extra]
    unique = dict.fromkeys(c + "\n" for part in parts for c in PEM.findall(part))
    return "".join(unique)


# After a blue/green upgrade's cut-over (host/upgrade.py) this generation's primary follows the
# other one's by subscription, Mastodon's role read-only there: the publisher takes the writes.
UPGRADE_PUBLISHER = """
SELECT substring(s.subconninfo from 'host=(\\S+)') AS host FROM pg_subscription s
WHERE s.subname LIKE 'mdata\\_from\\_%' AND EXISTS (
  SELECT 1 FROM pg_db_role_setting d JOIN pg_roles r ON r.oid = d.setrole
  WHERE r.rolname = '{user}' AND 'default_transaction_read_only=on' = ANY (d.setconfig))"""


def upgrade_publisher(cluster: Cluster, params: dict) -> str | None:
    """Where the cut-over of a blue/green upgrade sent DB_NAME's writes, while this server's
    generation is the one left (a pooler run then keeps them there), else None. The catalogs
    are the primary's on its replicas too."""
    rows = cluster.sql_json(UPGRADE_PUBLISHER.format(user=params["db_user"]))
    return rows[0]["host"] if rows else None


def tls_fingerprint(cluster: Cluster) -> str:
    """What PgBouncer loaded its TLS from: the certificate it presents and the anchors it
    trusts. A new one (a renewed certificate, a promoted replica's new CA) reloads it, so no
    old certificate is served or trusted on."""
    digest = hashlib.sha256()
    for path in (cluster.confdir / "server.crt", cluster.confdir / "server.key", SERVER_CA):
        digest.update(path.read_bytes())
    return digest.hexdigest() + "\n"


def write_files(
    params: dict, cluster: Cluster, users: dict[str, str], write_host: str | None = None
) -> tuple[bool, bool]:
    """(anything changed, a restart is needed: a listening setting changed); `write_host`: an
    upgrade's publisher, whose certificate the cut-over made trusted (kept)."""
    CONF_DIR.mkdir(mode=0o755, exist_ok=True)
    old = ini_settings(INI.read_text()) if INI.exists() else {}
    text = ini_text(params, cluster, write_host)
    restart = any(old.get(key) != ini_settings(text)[key] for key in RESTART_KEYS)
    changed = write_if_changed(INI, text, mode=0o640, owner="postgres")
    changed |= write_if_changed(USERLIST, userlist_text(users), mode=0o600, owner="postgres")
    kept = SERVER_CA.read_text() if write_host and SERVER_CA.exists() else ""
    trusted = trusted_servers(params, cluster, kept)
    changed |= write_if_changed(SERVER_CA, trusted, mode=0o644, owner="postgres")
    changed |= write_if_changed(TLS_STATE, tls_fingerprint(cluster), mode=0o600)
    return changed, restart and bool(old)


# --- the service, with systemd or (no systemd, as in the lab) on its own ---------------------
def pid() -> int | None:
    try:
        number = int(PIDFILE.read_text().split()[0])
        comm = Path(f"/proc/{number}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    return number if comm == "pgbouncer" else None


def running() -> bool:
    if systemd_running():
        return run(["systemctl", "is-active", "--quiet", "pgbouncer"], check=False).returncode == 0
    return pid() is not None


def limit_text(params: dict) -> str:
    """The unit's drop-in: the open-file limit the stack checked (pgbouncerOpenFiles; the
    unit's default soft limit, 1024, is below max_client_conn)."""
    return f"[Service]\nLimitNOFILE={int(params['pgbouncer_open_files'])}\n"


def write_limit(params: dict) -> bool:
    """The drop-in, with or without systemd (without it, `start` and the lab's boot read the
    limit from it); True when it changed, so PgBouncer restarts with the new limit."""
    if not write_if_changed(SYSTEMD_DROPIN, limit_text(params)):
        return False
    if systemd_running():
        run(["systemctl", "daemon-reload"])
    return True


def start(params: dict) -> None:
    log("starting pgbouncer")
    if systemd_running():
        run(["systemctl", "enable", "--now", "pgbouncer"])
    else:
        PIDFILE.unlink(missing_ok=True)  # a stale one from a power cut
        limit = int(params["pgbouncer_open_files"])
        # Root raises the limit, then PgBouncer runs as postgres (it refuses root), detached;
        # setpriv, not runuser, whose PAM session (pam_limits) lowers the soft limit again.
        script = f'ulimit -n {limit} && exec {AS_POSTGRES} "$@"'
        run(["sh", "-c", script, "sh", str(PGBOUNCER), "-d", "-q", str(INI)])
    wait_listening(params)


def stop() -> None:
    if systemd_running():
        run(["systemctl", "stop", "pgbouncer"])
        return
    number = pid()
    if number is None:
        return
    os.kill(number, signal.SIGTERM)  # immediate shutdown; clients reconnect
    deadline = time.monotonic() + START_WAIT
    while pid() is not None:
        if time.monotonic() > deadline:
            raise HostError(f"pgbouncer (pid {number}) did not stop within {START_WAIT} s")
        time.sleep(POLL)


def reload() -> None:
    log("reloading pgbouncer")
    if systemd_running():
        run(["systemctl", "reload", "pgbouncer"])
    else:
        os.kill(pid(), signal.SIGHUP)


def wait_listening(params: dict) -> None:
    address = (params["private_address"], int(params["pgbouncer_port"]))
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(address, timeout=1):
                return
        except OSError:
            time.sleep(POLL)
    raise HostError(
        f"pgbouncer does not listen on {address[0]}:{address[1]} after {START_WAIT} s; "
        f"see {LOGFILE}"
    )


def apply(params: dict, changed: bool, restart: bool) -> str:
    if write_limit(params):
        restart = True
    if not running():
        start(params)
        return "started"
    if restart:
        stop()
        start(params)
        return "restarted"
    if changed:
        reload()
        return "reloaded"
    return "unchanged"


def probe(params: dict, cluster: Cluster) -> str:
    """A query through each pool as Mastodon makes it (TLS, SCRAM as db_user): proves the
    pools, the auth file, the pass-through logins to PostgreSQL and their TLS at once, and that
    DB_NAME reaches a primary. The password is in a 0600 pass file in a private directory,
    removed afterwards."""
    host, port = params["private_address"], params["pgbouncer_port"]
    with tempfile.TemporaryDirectory(prefix="mastodon-data-pool-") as scratch:
        passfile = Path(scratch) / "pgpass"
        line = pgpass_line(host, port, "*", params["db_user"], params["db_password"])
        write_if_changed(passfile, line + "\n", mode=0o600)
        for database in (params["db_name"], params["read_db_name"]):
            conninfo = (
                f"host={host} port={port} dbname={database} user={params['db_user']} "
                f"sslmode=require connect_timeout=10 passfile={passfile}"
            )
            argv = [str(cluster.bindir / "psql"), "-X", "-A", "-t", "-w", conninfo]
            result = run([*argv, "-c", "SELECT pg_is_in_recovery()"], check=False, timeout=30)
            answer = result.stdout.strip()
            if result.returncode != 0 or answer not in ("t", "f"):
                raise HostError(
                    f"a query through pool {database} at {host}:{port} failed: "
                    f"{result.stderr.strip()}; see {LOGFILE}"
                )
            if database == params["db_name"] and answer != "f":
                raise HostError(
                    f"pool {database} at {host}:{port} reaches a server in recovery, not the "
                    f"primary {params['primary_address']}"
                )
    return "ok"


def main() -> dict:
    params = read_params()
    cluster = Cluster(params["postgres_version"], params["port"])
    changed = []
    if install():
        changed.append("installed")
    if not cluster.running():
        raise HostError(
            f"PostgreSQL {cluster.version}/{cluster.name} is not running: run this host's "
            "primary or replica step first"
        )
    users = {params["db_user"]: current_verifier(cluster, params, VERIFIER_WAIT)}
    if params["monitor_user"]:
        users[params["monitor_user"]] = monitor_verifier(
            cluster, params["monitor_user"], VERIFIER_WAIT
        )
    publisher = upgrade_publisher(cluster, params)
    if publisher:
        log(f"{params['db_name']} to {publisher}: the upgrade's cut-over moved the writes there")
    files_changed, restart = write_files(params, cluster, users, publisher)
    if files_changed:
        changed.append("configuration written")
    action = apply(params, files_changed, restart)
    if action != "unchanged":
        changed.append(f"pgbouncer {action}")
    for line in changed:
        log(line)
    return {
        "role": "pooler",
        "changed": changed,
        "listen": f"{params['private_address']}:{params['pgbouncer_port']}",
        "pool_size": int(params["pool_size"]),
        "max_client_conn": int(params["pgbouncer_max_client_conn"]),
        "open_files": int(params["pgbouncer_open_files"]),
        "probe": probe(params, cluster),
    }


if __name__ == "__main__":
    main_wrapper(main)
