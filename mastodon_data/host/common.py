"""Shared helpers of the host scripts. Runs on the database host with only Python's stdlib.

Parameters and secrets arrive as JSON on stdin, never on a command line. Progress goes to stderr,
one JSON summary line to stdout. No function here logs a secret or an SQL text holding one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from math import ceil
from pathlib import Path

APT_LOCK_WAIT = 300  # seconds; a fresh droplet's cloud-init may hold the dpkg lock
COMMAND_TIMEOUT = 900  # seconds for any one command (apt and base backups can be slow)
MARK_BEGIN = "# BEGIN mastodon-data (managed: edits here are overwritten)"
MARK_END = "# END mastodon-data"
NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
POLL = 0.1  # seconds between two looks at a server coming up or a receiver connecting
START_TIMEOUT = 300  # seconds pg_ctl waits for a server to accept connections (a standby
# replays its backlog to a consistent state first)
DURATION_RE = re.compile(r"(\d+)(ms|s|min)")
DURATION_MS = {"ms": 1, "s": 1000, "min": 60000}


class HostError(RuntimeError):
    """A failure the operator can act on; the message says what and how."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Params(dict):
    """The parameters on stdin: a key the script reads that was not sent is a clear error."""

    def __missing__(self, key: str):
        raise HostError(f"parameter {key} missing on stdin")


def read_params(text: str | None = None) -> Params:
    """The step's parameters (mastodon_data/host_params.py: this script's record, and its
    secrets), from stdin or `text`, the names and passwords among them checked before any use."""
    try:
        params = Params(json.load(sys.stdin) if text is None else json.loads(text))
    except (ValueError, TypeError) as exc:
        raise HostError(f"parameters on stdin are not a JSON object ({exc})") from None
    for key in ("db_user", "db_name", "replication_user", "monitor_user"):
        value = params.get(key)
        if value is None or (key == "monitor_user" and value == ""):  # "": no exporters
            continue
        if not NAME_RE.match(value):
            raise HostError(f"{key} {params[key]!r} is not a plain PostgreSQL name")
    for key in ("db_password", "replication_password", "monitor_password"):
        value = params.get(key)
        if value is not None and (
            not value.isascii() or not value.isprintable() or len(value) < 16
        ):
            raise HostError(f"{key} must be at least 16 printable ASCII characters")
    return params


def run(
    argv: list[str],
    *,
    input: str | None = None,
    check: bool = True,
    quiet_errors: bool = False,
    timeout: float = COMMAND_TIMEOUT,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """Runs argv; on failure raises HostError with its stderr (unless it may echo a secret)."""
    try:
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            cwd="/",  # commands run as postgres cannot enter root's home
        )
    except subprocess.TimeoutExpired:
        raise HostError(f"`{argv[0]}` did not finish within {timeout:.0f} s") from None
    if check and result.returncode != 0:
        detail = (
            "(output withheld: it may quote a secret)" if quiet_errors else result.stderr.strip()
        )
        raise HostError(
            f"`{' '.join(argv[:3])}` failed with exit code {result.returncode}: {detail}"
        )
    return result


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


class Cluster:
    """One Debian postgresql-common cluster (`<version>/main`)."""

    def __init__(self, version: int, port: int = 5432, name: str = "main"):
        self.version, self.port, self.name = int(version), int(port), name
        self.bindir = Path(f"/usr/lib/postgresql/{self.version}/bin")
        self.confdir = Path(f"/etc/postgresql/{self.version}/{name}")
        self.datadir = Path(f"/var/lib/postgresql/{self.version}/{name}")

    # --- installation and lifecycle -------------------------------------------------------
    def installed(self) -> bool:
        return (self.bindir / "postgres").exists()

    def install(self) -> bool:
        """Installs postgresql-<version>, from PGDG where the distro lacks it; False if present."""
        if self.installed():
            return False
        apt = ["apt-get", "-q", "-y", "-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT}"]
        noninteractive = {"DEBIAN_FRONTEND": "noninteractive"}
        log(f"installing PostgreSQL {self.version}")
        run(apt + ["update"], env=noninteractive)
        run(apt + ["install", "postgresql-common", "openssl"], env=noninteractive)
        policy = run(["apt-cache", "policy", f"postgresql-{self.version}"]).stdout
        if "Candidate:" not in policy or "Candidate: (none)" in policy:
            log(f"the distribution has no postgresql-{self.version}: adding the PGDG repository")
            run(
                ["/usr/share/postgresql-common/pgdg/apt.postgresql.org.sh", "-y"],
                env=noninteractive,
            )
        run(apt + ["install", f"postgresql-{self.version}"], env=noninteractive)
        return True

    def exists(self) -> bool:
        return (self.confdir / "postgresql.conf").exists()

    def create(self) -> None:
        log(f"creating cluster {self.version}/{self.name}")
        run(
            [
                "pg_createcluster",
                "--port",
                str(self.port),
                str(self.version),
                self.name,
                "--",
                "--data-checksums",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
            ]
        )

    def adopt(self) -> None:
        """Registers the data directory already in place (a complete clone holding its
        postgresql.conf, pg_hba.conf and pg_ident.conf): pg_createcluster moves the three files
        to the configuration directory and writes Debian's settings, without initdb."""
        log(f"registering the cloned data directory as cluster {self.version}/{self.name}")
        run(["pg_createcluster", "--port", str(self.port), str(self.version), self.name])

    def running(self) -> bool:
        result = run(["pg_ctlcluster", str(self.version), self.name, "status"], check=False)
        return result.returncode == 0

    def ctl(self, action: str) -> None:
        log(f"{action} cluster {self.version}/{self.name}")
        run(["pg_ctlcluster", str(self.version), self.name, action])

    def start(self) -> bool:
        """Starts the server; returns once it accepts connections (False if it already ran)."""
        if self.running():
            return False
        if systemd_running():
            self.ctl("start")  # pg_ctlcluster hands it to systemd, which must own the server
        else:
            self.pg_ctl_start()
        return True

    def start_argv(self) -> list[str]:
        """What `pg_ctlcluster start` runs, without its sleep-and-probe loop (at least 2 s:
        it sleeps 0.5 s, then wants three psql probes 0.5 s apart): `pg_ctl start -w` returns
        as soon as the server accepts connections. Same environment (the cluster's
        `environment` file, LANG from lc_messages, the OOM killer kept off the postmaster
        only), same log file, pg_ctl.conf options and configuration file; pg_createcluster
        wrote the socket directory, hba/ident files and external pid file into postgresql.conf.
        """
        env = dict(read_conf(self.confdir / "environment"))
        lc_messages = read_conf(self.confdir / "postgresql.conf").get("lc_messages")
        if "LANG" not in env and lc_messages:
            env["LANG"] = lc_messages
        env.setdefault("PG_OOM_ADJUST_FILE", "/proc/self/oom_score_adj")
        options = read_conf(self.confdir / "pg_ctl.conf").get("pg_ctl_options", "").split()
        pg_ctl = [
            str(self.bindir / "pg_ctl"),
            "start",
            "-w",
            "-t",
            str(START_TIMEOUT),
            "-D",
            str(self.datadir),
            "-l",
            str(self.log_file),
            *options,
            "-s",
            "-o",
            f'-c config_file="{self.confdir / "postgresql.conf"}"',
        ]
        # The shell lowers the OOM score (root only), then becomes postgres with a clean
        # environment; the postmaster resets its children's score (PG_OOM_ADJUST_FILE).
        oom = '{ echo -900 > /proc/self/oom_score_adj; } 2>/dev/null; exec "$@"'
        env_args = [f"{key}={value}" for key, value in sorted(env.items())]
        return ["sh", "-c", oom, "sh", *as_postgres(["env", "-i", *env_args, *pg_ctl])]

    def pg_ctl_start(self) -> None:
        log(f"start cluster {self.version}/{self.name}")
        run_dir = Path("/var/run/postgresql")
        if not run_dir.is_dir():  # pg_ctlcluster recreates it too (a tmpfs after a reboot)
            run_dir.mkdir(mode=0o2775, parents=True)
            shutil.chown(run_dir, "postgres", "postgres")
            os.chmod(run_dir, 0o2775)
        since = self.log_file.stat().st_size if self.log_file.exists() else 0
        result = run(self.start_argv(), check=False, timeout=START_TIMEOUT + 30)
        if result.returncode != 0:
            raise HostError(
                f"PostgreSQL {self.version}/{self.name} did not start: "
                f"{result.stderr.strip()} {log_tail(self.log_file, since)}".strip()
            )

    @property
    def log_file(self) -> Path:
        return Path(f"/var/log/postgresql/postgresql-{self.version}-{self.name}.log")

    def stop(self) -> None:
        if self.running():
            run(["pg_ctlcluster", str(self.version), self.name, "stop", "-m", "fast"])

    def system_identifier(self) -> str | None:
        if not (self.datadir / "global" / "pg_control").exists():
            return None
        out = run(
            [str(self.bindir / "pg_controldata"), str(self.datadir)], env={"LC_ALL": "C"}
        ).stdout
        match = re.search(r"Database system identifier:\s+(\d+)", out)
        return match.group(1) if match else None

    # --- SQL over the local socket, as the postgres superuser ---------------------------
    def sql(self, statement: str, *, quiet_errors: bool = False, database: str = "postgres") -> str:
        """Runs SQL (passed on stdin, so never on a command line) and returns unaligned output."""
        argv = as_postgres(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-p",
                str(self.port),
                "-d",
                database,
            ]
        )
        return run(argv, input=statement, quiet_errors=quiet_errors).stdout.strip()

    def sql_json(self, query: str, database: str = "postgres"):
        out = self.sql(
            f"SELECT coalesce(json_agg(q), '[]') FROM ({query}) AS q;", database=database
        )
        return json.loads(out)

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            result = run(
                as_postgres([str(self.bindir / "pg_isready"), "-q", "-p", str(self.port)]),
                check=False,
            )
            if result.returncode == 0:
                return
            time.sleep(POLL)
        raise HostError(
            f"PostgreSQL {self.version}/{self.name} did not accept connections within "
            f"{seconds:.0f} s; see /var/log/postgresql/postgresql-{self.version}-"
            f"{self.name}.log"
        )


def systemd_running() -> bool:
    """As pg_ctlcluster decides whether systemd owns the clusters (then starts go through it)."""
    return Path("/run/systemd/system").is_dir()


def read_conf(path: Path) -> dict[str, str]:
    """The settings of a postgresql.conf-style file ({} when it is missing)."""
    return read_conf_text(path.read_text()) if path.exists() else {}


def read_conf_text(text: str) -> dict[str, str]:
    """`name = value` lines of a postgresql.conf-style text (quotes removed; the last wins)."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=?\s*('(?:[^']|'')*'|[^\s#]*)", line)
        if match:
            value = match.group(2)
            if value.startswith("'"):
                value = value[1:-1].replace("''", "'")
            found[match.group(1)] = value
    return found


def log_tail(path: Path, since: int, limit: int = 2000) -> str:
    """What the server logged after offset `since` (its last `limit` characters)."""
    if not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(since)
        return handle.read().decode(errors="replace")[-limit:].strip()


# --- files -----------------------------------------------------------------------------------
def write_if_changed(
    path: Path, content: str, *, mode: int = 0o644, owner: str | None = None
) -> bool:
    """Atomically writes content when it differs; returns whether it changed."""
    if path.exists() and path.read_text() == content:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.chmod(tmp, mode)
    if owner:
        shutil.chown(tmp, owner, owner)
    os.replace(tmp, path)
    return True


def replace_managed_block(text: str, lines: list[str]) -> str:
    """`text` with our marked block replaced by `lines` (placed first, so it wins in pg_hba)."""
    kept, inside = [], False
    for line in text.splitlines():
        if line == MARK_BEGIN:
            inside = True
        elif line == MARK_END:
            inside = False
        elif not inside:
            kept.append(line)
    block = [MARK_BEGIN, *lines, MARK_END]
    # pg_hba is first-match: our hostssl lines go before Debian's defaults.
    header = []
    while kept and (kept[0].startswith("#") or not kept[0].strip()):
        header.append(kept.pop(0))
    return "\n".join(header + block + kept) + "\n"


def server_settings(cluster: Cluster, params: dict) -> dict[str, str]:
    """Settings shared by primary and replicas (a standby needs the primary's limits or more)."""
    senders = int(params["wal_senders"])
    return {
        "listen_addresses": f"'localhost,{params['private_address']}'",
        "port": str(cluster.port),
        "max_connections": str(int(params["max_connections"])),
        "ssl": "on",
        "ssl_cert_file": f"'{cluster.confdir / 'server.crt'}'",
        "ssl_key_file": f"'{cluster.confdir / 'server.key'}'",
        "ssl_min_protocol_version": "'TLSv1.2'",
        "password_encryption": "'scram-sha-256'",
        "wal_level": "replica",
        "max_wal_senders": str(senders),
        "max_replication_slots": str(senders),
        "wal_keep_size": f"'{params['wal_keep_size']}'",
        "max_slot_wal_keep_size": f"'{params['max_slot_wal_keep_size']}'",
        "hot_standby": "on",
        "hot_standby_feedback": "on",
        "wal_log_hints": "on",  # lets pg_rewind bring a failed primary back as a replica
        # A dead link is noticed within replication_timeout on both ends (the primary's
        # walsender lets go of the replica's slot, the replica's receiver gives up), and a
        # replica tries again every wal_retrieve_retry_interval: it streams again within
        # seconds of the link's return instead of waiting out TCP's retransmission backoff.
        "wal_sender_timeout": f"'{params['replication_timeout']}'",
        "wal_receiver_timeout": f"'{params['replication_timeout']}'",
        "wal_retrieve_retry_interval": f"'{params['wal_retrieve_retry_interval']}'",
    }


def duration_ms(text: str) -> int:
    """A PostgreSQL duration with its unit (500ms, 10s, 1min) in milliseconds."""
    match = DURATION_RE.fullmatch(text)
    if not match:
        raise HostError(f"{text!r} is not a duration like 10s (units ms, s, min)")
    return int(match.group(1)) * DURATION_MS[match.group(2)]


def keepalive_options(replication_timeout: str) -> dict[str, int]:
    """libpq options that make a replica's replication connection fail within the timeout
    when the primary stops answering: TCP keepalives on an idle connection (idle time, then
    `count` unanswered probes `interval` apart) and tcp_user_timeout on unacknowledged data
    (and on connection attempts)."""
    timeout = duration_ms(replication_timeout)
    seconds = max(3, ceil(timeout / 1000))
    interval, count = max(1, seconds // 6), 3
    return {
        "keepalives": 1,
        "keepalives_idle": max(1, seconds - count * interval),
        "keepalives_interval": interval,
        "keepalives_count": count,
        "tcp_user_timeout": timeout,
    }


def app_hba_lines(params: dict) -> list[str]:
    """Mastodon's role from the allowed sources, and from every server whose PgBouncer logs in
    here (its own reads; DB_NAME on whichever server is the primary); TLS and SCRAM only. The
    exporters' role through the local socket only, SCRAM."""
    sources = [str(ipaddress.ip_network(s)) for s in params["postgres_allowed_sources"]]
    for peer in params["pool_peers"]:
        address = str(ipaddress.ip_network(peer))
        sources += [address] if address not in sources else []
    lines = [f"hostssl {params['db_name']} {params['db_user']} {s} scram-sha-256" for s in sources]
    if params["monitor_user"]:  # the exporters on this host, over the local socket
        lines.append(f"local postgres {params['monitor_user']} scram-sha-256")
    return lines


def write_settings(cluster: Cluster, settings: dict[str, str]) -> bool:
    content = (
        "# Written by mastodon-data; changes here are overwritten on the next run.\n"
        + "".join(f"{key} = {value}\n" for key, value in sorted(settings.items()))
    )
    return write_if_changed(
        cluster.confdir / "conf.d" / "mastodon-data.conf", content, owner="postgres"
    )


def apply_settings(cluster: Cluster, changed: bool) -> str:
    """Starts, reloads or restarts only as much as the changed settings need."""
    if cluster.start():
        cluster.wait_ready()
        return "started"
    if not changed:
        return "unchanged"
    cluster.ctl("reload")
    time.sleep(0.5)  # the postmaster applies a reload asynchronously
    pending = cluster.sql("SELECT string_agg(name, ',') FROM pg_settings WHERE pending_restart;")
    if pending:
        log(f"restart needed for: {pending}")
        cluster.ctl("restart")
        cluster.wait_ready()
        return "restarted"
    return "reloaded"


# --- SCRAM -------------------------------------------------------------------------------
def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier, so only the verifier ever reaches the server."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt)}$"
        f"{b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"
    )


def verifier_matches(verifier: str | None, password: str) -> bool:
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier or "")
    if not match:
        return False
    expected = scram_verifier(password, base64.b64decode(match.group(2)), int(match.group(1)))
    return hmac.compare_digest(expected, verifier)


def slot_name(replica_name: str) -> str:
    return "mdata_" + re.sub(r"[^a-z0-9_]", "_", replica_name.lower())


def pgpass_line(host: str, port: int, database: str, user: str, password: str) -> str:
    esc = lambda value: str(value).replace("\\", "\\\\").replace(":", "\\:")  # noqa: E731
    return ":".join(esc(v) for v in (host, port, database, user, password))


def main_wrapper(body) -> None:
    """Runs the script body; a HostError becomes one clear line on stderr and exit code 1."""
    try:
        summary = body()
    except HostError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(json.dumps(summary, sort_keys=True), flush=True)
