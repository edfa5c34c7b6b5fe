"""The replica health endpoint (mastodon_data/host/health_server.py) against a real PostgreSQL 15
primary and its streaming replica on loopback: 503 on the primary, 200 on the replica, 503 when
its replay is paused beyond the byte bound and 200 again after it resumes, 503 when it no longer
streams (the primary stopped) and when PostgreSQL is down."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.local.localkit import (
    LOOPBACK,
    PG_BIN,
    as_postgres,
    chown_postgres,
    free_port,
    missing_postgres,
    stop,
    temp_dir,
    wait_for_port,
)

pytestmark = [
    pytest.mark.local,
    pytest.mark.skipif(missing_postgres() is not None, reason=str(missing_postgres())),
]
SERVER = Path(__file__).parents[2] / "mastodon_data" / "host" / "health_server.py"
MAX_LAG_BYTES = 1024 * 1024
WAIT = 30  # seconds for any state to show


def ask(port: int) -> tuple[int, dict]:
    url = f"http://{LOOPBACK}:{port}/replica"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as answer:
        return answer.code, json.load(answer)


def wait_answer(port: int, status: int, reason: str | None = None) -> dict:
    deadline = time.monotonic() + WAIT
    while True:
        code, body = ask(port)
        if code == status and reason in (None, body["reason"]):
            return body
        assert time.monotonic() < deadline, f"still {code} after {WAIT} s: {body}"
        time.sleep(0.2)


def start_cluster(data: Path, port: int, sockets: Path) -> None:
    as_postgres(
        [str(PG_BIN / "pg_ctl"), "start", "-w", "-D", str(data), "-l", str(data / "log"),
         "-o", f"-p {port} -k {sockets} -c listen_addresses={LOOPBACK}"],
        cwd=data,
    )  # fmt: skip


def sql(port: int, sockets: Path, statement: str) -> str:
    argv = [str(PG_BIN / "psql"), "-X", "-A", "-t", "-h", str(sockets), "-p", str(port)]
    return as_postgres([*argv, "-d", "postgres", "-c", statement], cwd=sockets).stdout.strip()


def health_server(
    directory: Path, pg_port: int, sockets: Path, max_lag_seconds: int = 3600
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = directory / f"health-{pg_port}-{max_lag_seconds}.json"
    config.write_text(
        json.dumps(
            {
                "postgres_version": 15,
                "port": pg_port,
                "private_address": LOOPBACK,
                "replica_health_port": port,
                "replica_max_lag_bytes": MAX_LAG_BYTES,
                "replica_max_lag_seconds": max_lag_seconds,
            }
        )
    )
    server = directory / SERVER.name  # as on a host: Debian's python3, a file postgres reads
    server.write_text(SERVER.read_text())
    chown_postgres(config, server)
    process = subprocess.Popen(
        ["runuser", "-u", "postgres", "--", "/usr/bin/python3", str(server), str(config)],
        env={**os.environ, "PGHOST": str(sockets)},
    )
    wait_for_port(port, process, "the health endpoint")
    return process, port


def test_the_health_endpoint_follows_role_streaming_and_lag():
    with temp_dir(owner="postgres") as root:
        primary, replica = root / "primary", root / "replica"
        p_port, r_port = free_port(), free_port()
        as_postgres([str(PG_BIN / "initdb"), "-A", "trust", "-D", str(primary)], cwd=root)
        start_cluster(primary, p_port, root)
        servers = []
        try:
            as_postgres(
                [str(PG_BIN / "pg_basebackup"), "-h", str(root), "-p", str(p_port),
                 "-D", str(replica), "-R", "-X", "stream"],
                cwd=root,
            )  # fmt: skip
            start_cluster(replica, r_port, root)
            servers = [health_server(root, p_port, root), health_server(root, r_port, root)]
            (_, primary_health), (_, replica_health) = servers

            assert wait_answer(primary_health, 503)["reason"] == (
                "not a replica (this server is a primary)"
            )
            body = wait_answer(replica_health, 200)
            assert body["healthy"] is True and body["streaming"] is True
            assert body["max_lag_bytes"] == MAX_LAG_BYTES

            sql(r_port, root, "SELECT pg_wal_replay_pause()")
            sql(
                p_port,
                root,
                "CREATE TABLE t AS SELECT g, repeat('x', 100) FROM generate_series(1, 50000) g",
            )
            body = wait_answer(replica_health, 503)
            assert body["lag_bytes"] > MAX_LAG_BYTES
            assert body["reason"] == f"{body['lag_bytes']} bytes behind (more than {MAX_LAG_BYTES})"
            sql(r_port, root, "SELECT pg_wal_replay_resume()")
            assert wait_answer(replica_health, 200)["lag_bytes"] == 0

            # Restarted while the primary is idle: back in rotation even with a 1 s bound.
            servers.append(health_server(root, r_port, root, max_lag_seconds=1))
            strict = servers[-1][1]
            as_postgres(
                [str(PG_BIN / "pg_ctl"), "stop", "-m", "immediate", "-D", str(replica)], cwd=root
            )
            start_cluster(replica, r_port, root)
            time.sleep(2)  # the last replayed transaction is older than the bound
            body = wait_answer(strict, 200, "streaming replica within the lag bounds")
            assert (body["lag_bytes"], body["lag_seconds"]) == (0, 0)

            conninfo = sql(r_port, root, "SHOW primary_conninfo").replace("'", "''")
            sql(r_port, root, f"ALTER SYSTEM SET primary_conninfo = '{conninfo} user=nobody'")
            sql(r_port, root, "SELECT pg_reload_conf()")  # the primary answers, refuses the role
            wait_answer(replica_health, 503, "not streaming from the primary, which answers")
            sql(r_port, root, f"ALTER SYSTEM SET primary_conninfo = '{conninfo}'")
            sql(r_port, root, "SELECT pg_reload_conf()")
            assert wait_answer(replica_health, 200)["streaming"] is True

            as_postgres(
                [str(PG_BIN / "pg_ctl"), "stop", "-m", "fast", "-D", str(primary)], cwd=root
            )  # reads go on from the replica until a failover
            body = wait_answer(replica_health, 200, "primary unreachable: serving all it got")
            assert body["streaming"] is False
            as_postgres(
                [str(PG_BIN / "pg_ctl"), "stop", "-m", "fast", "-D", str(replica)], cwd=root
            )
            reason = wait_answer(replica_health, 503)["reason"]
            assert reason.startswith("PostgreSQL unreachable: ")
        finally:
            for process, _ in servers:
                stop(process)
            for data in (replica, primary):
                if (data / "postmaster.pid").exists():
                    as_postgres(
                        [str(PG_BIN / "pg_ctl"), "stop", "-m", "immediate", "-D", str(data)],
                        cwd=root,
                    )
