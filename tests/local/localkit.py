"""Throwaway local services for the `local` tests: a PostgreSQL 15 cluster with TLS, PgBouncer in
transaction mode in front of it, and redis-server with TLS and a test CA. Loopback only, free
ports, every wait bounded, every process stopped and every file removed afterwards."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOOPBACK = "127.0.0.1"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PGBOUNCER = Path("/usr/sbin/pgbouncer")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 30  # seconds for any service to accept connections
COMMAND_TIMEOUT = 60


def missing_postgres() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (initdb and pgbouncer run as the postgres user via runuser)"
    for path in (PG_BIN / "initdb", PG_BIN / "pg_ctl", PGBOUNCER):
        if not path.exists():
            return f"{path} is not installed (apt-get install postgresql-15 pgbouncer)"
    if not shutil.which("openssl") or not shutil.which("runuser"):
        return "openssl and runuser are needed"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user (installed with postgresql-common)"
    return None


def missing_redis() -> str | None:
    if not Path(REDIS_SERVER).exists():
        return "redis-server is not installed (apt-get install redis-server)"
    if not shutil.which("openssl"):
        return "openssl is needed for the test CA"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on {LOOPBACK}:{port} within {START_TIMEOUT} s")


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, check=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, **kwargs
    )


def as_postgres(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run(["runuser", "-u", "postgres", "--", *command], cwd=cwd)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def temp_dir(owner: str | None = None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mastodon-data-local-"))
    try:
        if owner:
            entry = pwd.getpwnam(owner)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A test CA: (certificate, key)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-subj", f"/CN=mastodon-data {name}", "-keyout", str(key), "-out", str(cert)]
    )
    return cert, key


def make_server_cert(directory: Path, ca: tuple[Path, Path], name: str) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 and localhost signed by `ca`: (certificate, key)."""
    cert, key, csr = (directory / f"{name}{ext}" for ext in (".crt", ".key", ".csr"))
    extensions = directory / f"{name}.ext"
    extensions.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    run(
        ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost"]
        + ["-keyout", str(key), "-out", str(csr)]
    )
    run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1])]
        + ["-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert)]
    )
    return cert, key


def chown_postgres(*paths: Path) -> None:
    entry = pwd.getpwnam("postgres")
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)


class LocalPostgres:
    """PostgreSQL 15 on a loopback port (ssl on, SCRAM only over TCP) and PgBouncer in front of
    it in transaction mode, both TLS on the client side like DigitalOcean's."""

    def __init__(self, root: Path, password: str):
        self.root = root
        self.password = password
        self.port = free_port()
        self.bouncer_port = free_port()
        self.data = root / "data"
        self.socket_dir = root / "socket"
        self.bouncer: subprocess.Popen | None = None
        self.started = False

    def start(self, db_name: str, user: str, pool_name: str, pool_size: int) -> None:
        ca = make_ca(self.root, "ca")
        self.ca_cert = ca[0]  # what a client verifies the server with (verify-full)
        cert, key = make_server_cert(self.root, ca, "server")
        key.chmod(0o600)
        self.socket_dir.mkdir()
        chown_postgres(cert, key, self.socket_dir)
        as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"],
            cwd=self.root,
        )
        (self.data / "pg_hba.conf").write_text(
            "local all postgres trust\n"  # the test's own set-up, through its private socket
            f"hostssl all all {LOOPBACK}/32 scram-sha-256\n"
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{LOOPBACK}'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                f"ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n"
                "password_encryption = 'scram-sha-256'\nfsync = off\n"
            )
        as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log")]
            + ["-w", "-t", str(START_TIMEOUT), "start"],
            cwd=self.root,
        )
        self.started = True
        self.superuser_sql(
            f"CREATE ROLE {user} LOGIN PASSWORD '{self.password}'",
            f"CREATE DATABASE {db_name} OWNER {user}",
        )
        self._start_bouncer(db_name, user, pool_name, pool_size, cert, key)

    def superuser_sql(self, *statements: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname=dbname,
            autocommit=True, connect_timeout=10,
        ) as conn:  # fmt: skip
            for statement in statements:
                conn.execute(statement)

    def _start_bouncer(self, db_name, user, pool_name, pool_size, cert: Path, key: Path) -> None:
        userlist = self.root / "userlist.txt"
        userlist.write_text(f'"{user}" "{self.password}"\n')
        ini = self.root / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{pool_name} = host={LOOPBACK} port={self.port} dbname={db_name}\n"
            "[pgbouncer]\n"
            f"listen_addr = {LOOPBACK}\nlisten_port = {self.bouncer_port}\n"
            "unix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {userlist}\n"
            f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 50\n"
            f"client_tls_sslmode = require\nclient_tls_cert_file = {cert}\n"
            f"client_tls_key_file = {key}\nserver_tls_sslmode = require\n"
            f"logfile = {self.root / 'pgbouncer.log'}\n"
        )
        userlist.chmod(0o600)
        chown_postgres(userlist, ini)
        # Started directly as postgres (PgBouncer refuses root), so its pid is ours to stop.
        self.bouncer = subprocess.Popen(
            [str(PGBOUNCER), str(ini)],
            user="postgres",
            group="postgres",
            extra_groups=[],
            cwd=self.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.bouncer_port, self.bouncer, "pgbouncer")

    def stop(self) -> None:
        if self.bouncer is not None:
            stop(self.bouncer)
        if self.started:
            as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w"]
                + ["-t", str(START_TIMEOUT), "stop"],
                cwd=self.root,
            )
            self.started = False


class LocalRedis:
    """redis-server with TLS only (no plain port), a password, and a test CA."""

    def __init__(self, root: Path, password: str):
        self.root = root
        self.password = password
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.ca_cert: Path | None = None

    def start(self) -> None:
        ca = make_ca(self.root, "redis-ca")
        cert, key = make_server_cert(self.root, ca, "redis")
        self.ca_cert = ca[0]
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--bind", LOOPBACK, "--port", "0", "--tls-port", str(self.port)]
            + ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            + ["--tls-ca-cert-file", str(ca[0]), "--tls-auth-clients", "no"]
            + ["--requirepass", self.password, "--maxmemory-policy", "noeviction"]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.root)],
            cwd=self.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process, "redis-server")

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
