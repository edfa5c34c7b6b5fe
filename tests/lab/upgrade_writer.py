"""Run on an app droplet by tests/lab/test_managed_upgrade_standin.py: Mastodon's role writing a
row once a second through the emitted env (the pool), each attempt on a new connection, until
the file STOP exists (or MAX_SECONDS); prints one JSON answer: every attempt's time and outcome,
the ids committed. The input on stdin as JSON {"env": .env.production's values, "ca": the CA}.

    python upgrade_writer.py STOP < input.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import psycopg

MAX_SECONDS = 900
INTERVAL = 1.0


def write(env: dict, ca: str) -> int:
    with psycopg.connect(
        host=env["DB_HOST"], port=int(env["DB_PORT"]), dbname=env["DB_NAME"],
        user=env["DB_USER"], password=env["DB_PASS"], sslmode="verify-full", sslrootcert=ca,
        connect_timeout=3, prepare_threshold=None,
    ) as conn:  # fmt: skip
        return conn.execute("INSERT INTO upgrade_writes DEFAULT VALUES RETURNING id").fetchone()[0]


def main() -> int:
    stop, data = Path(sys.argv[1]), json.load(sys.stdin)
    attempts, committed = [], []
    with tempfile.NamedTemporaryFile("w", suffix=".crt") as ca:
        ca.write(data["ca"])
        ca.flush()
        started = time.monotonic()
        while not stop.exists() and time.monotonic() - started < MAX_SECONDS:
            at = time.time()
            try:
                committed.append(write(data["env"], ca.name))
                attempts.append([at, "ok"])
            except psycopg.Error as exc:
                attempts.append([at, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"])
            time.sleep(max(0.0, INTERVAL - (time.time() - at)))
    print(json.dumps({"attempts": attempts, "committed": committed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
