"""The benchmark's work on the app droplet, through `.env.production` as Mastodon reads it (the
stack's outputs on stdin for the CA and `migration_env`); one JSON line per event on stdout.

    python -m lab.bench_managed.app write ENV_FILE ROUND SECONDS
    python -m lab.bench_managed.app pgbench ENV_FILE CLIENTS SECONDS

write: inserts rows 1, 2, ... of round ROUND through the pool (DB_*), one transaction each, no
prepared statements (PREPARED_STATEMENTS=false), reconnecting after an error (a dead peer given
up after 2 s); a line per commit or error; stops after 20 commits following its first error or
at its deadline, then reads the round's rows back ({"present": [...]}).
pgbench: PostgreSQL 15's pgbench, `-M simple`, the same clients through the pool (DB_*, 25061)
and direct (migration_env, 25060), verify-full with the cluster's CA, the password in the
environment; one line per builtin script and target with its tps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from lab.bench_managed.figures import pgbench_tps
from lab.standin.managed_check import read_env

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
AFTER_ERROR = 20  # commits after the first error, then the writer stops
SCRIPTS = ("tpcb-like", "select-only")  # pgbench's builtins: short write and read transactions


def emit(**event) -> None:
    print(json.dumps({**event, "at": time.time()}), flush=True)


def connect(env: dict[str, str], ca: str) -> psycopg.Connection:
    return psycopg.connect(
        host=env["DB_HOST"], port=int(env["DB_PORT"]), dbname=env["DB_NAME"],
        user=env["DB_USER"], password=env["DB_PASS"], sslmode="verify-full", sslrootcert=ca,
        autocommit=True, connect_timeout=2, tcp_user_timeout=2000, prepare_threshold=None,
    )  # fmt: skip


def write(env: dict[str, str], ca: str, round_no: int, seconds: float) -> None:
    with connect(env, ca) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_takeover (round int, n int, "
                     "PRIMARY KEY (round, n))")  # fmt: skip
    deadline, n, conn, failed, after = time.monotonic() + seconds, 0, None, False, 0
    while time.monotonic() < deadline and after < AFTER_ERROR:
        try:
            conn = conn or connect(env, ca)
            conn.execute("INSERT INTO bench_takeover VALUES (%s, %s)", (round_no, n + 1))
            n, after = n + 1, after + failed
            emit(committed=n)
        except psycopg.errors.UniqueViolation:  # committed; its answer was lost with the node
            n += 1
            emit(committed=n)
        except psycopg.Error as error:
            failed = True
            emit(error=type(error).__name__, message=str(error).strip()[:200])
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.2)
        time.sleep(0.02)
    if conn is not None:
        conn.close()
    with connect(env, ca) as conn:
        rows = conn.execute("SELECT n FROM bench_takeover WHERE round = %s", (round_no,))
        emit(present=[row[0] for row in rows])


def pgbench(env: dict[str, str], migration: dict, ca: str, clients: int, seconds: int) -> None:
    common = {"PGUSER": env["DB_USER"], "PGPASSWORD": env["DB_PASS"], "PGSSLMODE": "verify-full",
              "PGSSLROOTCERT": ca, "PGCONNECT_TIMEOUT": "10"}  # fmt: skip
    targets = {name: {**common, "PGHOST": e["DB_HOST"], "PGPORT": e["DB_PORT"],
                      "PGDATABASE": e["DB_NAME"]}
               for name, e in (("pool", env), ("direct", migration))}  # fmt: skip

    def run(target: str, *argv: str) -> str:
        result = subprocess.run(
            [PGBENCH, *argv], env={**os.environ, **targets[target]}, capture_output=True,
            text=True, timeout=seconds + 120,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"pgbench {' '.join(argv)} ({target}): {result.stderr[-600:]}")
        return result.stdout

    run("direct", "-i", "-q", "-s", "1")  # pgbench's tables (DDL past the pool, as migrations)
    for script in SCRIPTS:
        for target in targets:
            out = run(target, "-n", "-M", "simple", "-b", script, "-c", str(clients), "-j", "2",
                      "-T", str(seconds))  # fmt: skip
            emit(script=script, target=target, clients=clients, tps=pgbench_tps(out))


def main(argv: list[str] | None = None) -> int:
    action, env_file, *rest = sys.argv[1:] if argv is None else argv
    outputs = json.loads(sys.stdin.read())
    env = read_env(Path(env_file))
    with tempfile.NamedTemporaryFile("w", suffix=".crt") as ca:
        ca.write(outputs["postgres_ca_cert"])
        ca.flush()
        if action == "write":
            write(env, ca.name, int(rest[0]), float(rest[1]))
        else:
            pgbench(env, outputs["migration_env"], ca.name, int(rest[0]), int(rest[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
