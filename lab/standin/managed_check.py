"""What a Mastodon app server sees of a managed stack: each group of `.env.production`'s variables
used as Mastodon uses it, from an app droplet (`make lab-managed` runs it there), one line each.

    pulumi stack output --json --show-secrets | python -m lab.standin.managed_check ENV_FILE

- pool: DB_* through the pool (transaction mode, PREPARED_STATEMENTS=false), a row written;
- replica: REPLICA_DB_* reads that row, on a server in recovery;
- migration: the output `migration_env` past the pool holds a session advisory lock across
  transactions (what Rails' migrations need);
- redis: REDIS_URL (and CACHE_REDIS_URL) over TLS, a key written and read;
- s3: an object uploaded with the env's key as Mastodon does (public-read), read back
  anonymously through S3_ALIAS_HOST.
Every connection verifies its server's certificate (PostgreSQL: `postgres_ca_cert`).
Exit status 1 when a group fails.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

READ_WAIT = 10.0  # seconds for a row to reach the read-only node


def read_env(path: Path) -> dict[str, str]:
    """KEY=value lines as render-env writes them (plain, or in single or double quotes)."""
    env = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if not sep or line.lstrip().startswith("#"):
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[name.strip()] = value
    return env


class Check:
    def __init__(self, env: dict[str, str], outputs: dict, ca_file: Path):
        self.env, self.outputs, self.ca_file = env, outputs, ca_file
        self.marker = f"lab-managed {uuid.uuid4()}"

    def connect(self, prefix: str, env: dict[str, str], **options) -> psycopg.Connection:
        return psycopg.connect(
            host=env[f"{prefix}HOST"], port=int(env[f"{prefix}PORT"]),
            dbname=env[f"{prefix}NAME"], user=self.env["DB_USER"], password=self.env["DB_PASS"],
            sslmode="verify-full", sslrootcert=str(self.ca_file), connect_timeout=10, **options,
        )  # fmt: skip

    def pool(self) -> str:
        prepared = self.env.get("PREPARED_STATEMENTS", "true") != "false"
        with self.connect("DB_", self.env, prepare_threshold=5 if prepared else None) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS lab_check (note text PRIMARY KEY)")
            conn.execute("INSERT INTO lab_check VALUES (%s)", (self.marker,))
            conn.commit()
            count = conn.execute("SELECT count(*) FROM lab_check").fetchone()[0]
        host = f"{self.env['DB_HOST']}:{self.env['DB_PORT']}/{self.env['DB_NAME']}"
        return f"a row written through {host} ({count} rows in lab_check)"

    def replica(self) -> str:
        deadline = time.monotonic() + READ_WAIT
        with self.connect("REPLICA_DB_", self.env, autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0], "not in recovery"
            find = "SELECT 1 FROM lab_check WHERE note = %s"
            while not conn.execute(find, (self.marker,)).fetchone():
                if time.monotonic() > deadline:
                    raise AssertionError(f"the row is not there after {READ_WAIT:.0f} s")
                time.sleep(0.2)
        return f"the row read on {self.env['REPLICA_DB_HOST']} (in recovery)"

    def migration(self) -> str:
        migration = self.outputs["migration_env"]
        with self.connect("DB_", migration, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(20260)")
            with conn.transaction():
                conn.execute("SELECT 1")
            held = conn.execute("SELECT pg_advisory_unlock(20260)").fetchone()[0]
        assert held, "the advisory lock was lost between transactions"
        where = f"{migration['DB_HOST']}:{migration['DB_PORT']}"
        return f"a session advisory lock held across transactions on {where}"

    def redis(self) -> str:
        import redis

        seen = []
        for name in ("REDIS_URL", "CACHE_REDIS_URL"):
            if name in self.env:
                client = redis.Redis.from_url(self.env[name], socket_timeout=10)
                client.set("lab-managed", self.marker)
                assert client.get("lab-managed").decode() == self.marker
                seen.append(f"{name} ({self.env[name].split('://')[0]}://)")
        return "a key written and read through " + ", ".join(seen)

    def s3(self) -> str:
        import boto3

        env = self.env
        s3 = boto3.client(
            "s3", endpoint_url=env["S3_ENDPOINT"], region_name=env["S3_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip
        key = f"lab-managed/{uuid.uuid4()}.txt"
        s3.put_object(Bucket=env["S3_BUCKET"], Key=key, Body=self.marker.encode(),
                      ACL=env["S3_PERMISSION"], ContentType="text/plain")  # fmt: skip
        url = f"https://{env['S3_ALIAS_HOST']}/{key}"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read().decode() == self.marker, "another body"
        return f"uploaded ({env['S3_PERMISSION']}), read anonymously at {url}"


def run(checks: dict[str, Callable[[], str]]) -> int:
    failed = 0
    for group, check in checks.items():
        try:
            print(f"{group:<9} ok: {check()}")
        except Exception as error:  # noqa: BLE001 - every group is reported
            failed += 1
            print(f"{group:<9} FAILED: {type(error).__name__}: {error}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    outputs = json.loads(sys.stdin.read())
    with tempfile.NamedTemporaryFile("w", suffix=".crt") as ca:
        ca.write(outputs["postgres_ca_cert"])
        ca.flush()
        check = Check(read_env(Path(argv[0])), outputs, Path(ca.name))
        groups = {"pool": check.pool, "replica": check.replica, "migration": check.migration}
        if "REDIS_URL" in check.env:
            groups["redis"] = check.redis
        if "S3_BUCKET" in check.env:
            groups["s3"] = check.s3
        return run(groups)


if __name__ == "__main__":
    sys.exit(main())
