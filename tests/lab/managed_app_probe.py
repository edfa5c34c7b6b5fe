"""Run on an app droplet by tests/lab/test_managed_stack.py (the lab's host names resolve, its
public CA is trusted): one probe of the emitted env, the input on stdin as JSON
{"env": .env.production's values, "migration": migration_env, "ca": postgres_ca_cert}; prints
one JSON answer.

    python managed_app_probe.py PROBE < input.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import psycopg


def connect(spec: dict, ca: str, prefix: str = "DB_", **options) -> psycopg.Connection:
    return psycopg.connect(
        host=spec[f"{prefix}HOST"], port=int(spec[f"{prefix}PORT"]), dbname=spec[f"{prefix}NAME"],
        user=spec["DB_USER"], password=spec["DB_PASS"], sslmode="verify-full", sslrootcert=ca,
        connect_timeout=10, **options,
    )  # fmt: skip


def error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


def create_table(data: dict, ca: str) -> dict:
    """CREATE TABLE as Mastodon's role past the pool (as `rails db:migrate` does)."""
    spec = {**data["env"], **data["migration"]}
    try:
        with connect(spec, ca, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS probe_rows (id bigserial PRIMARY KEY, note text)"
            )  # noqa: E501
        return {"ok": True}
    except psycopg.Error as exc:
        return {"ok": False, "error": error(exc)}


def prepared(data: dict, ca: str, threshold: int | None) -> dict:
    """Three clients through the pool, their transactions interleaved, each statement prepared
    on the server from its first use (threshold 0) or never (None: PREPARED_STATEMENTS=false)."""
    conns = [connect(data["env"], ca, prepare_threshold=threshold) for _ in range(3)]
    errors = []
    try:
        for round_ in range(4):
            for conn in conns:
                try:
                    with conn.transaction():
                        conn.execute("SELECT %s::int + 1", (round_,)).fetchone()
                except psycopg.Error as exc:
                    errors.append(error(exc))
    finally:
        for conn in conns:
            conn.close()
    return {"errors": errors}


def advisory(data: dict, ca: str) -> dict:
    """A session advisory lock across transactions through `migration_env` (Rails' migrations)."""
    spec = {**data["env"], **data["migration"]}
    with connect(spec, ca, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(4242)")
        with conn.transaction():
            conn.execute("SELECT 1")
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        held = conn.execute("SELECT pg_advisory_unlock(4242)").fetchone()[0]
        port = conn.info.port
    return {"held": held, "port": port, "backend": backend}


def replica_read(data: dict, ca: str) -> dict:
    """A row written through the pool, then read on REPLICA_DB_HOST."""
    note = str(uuid.uuid4())
    with connect(data["env"], ca) as conn:
        conn.execute("INSERT INTO probe_rows (note) VALUES (%s)", (note,))
        conn.commit()
    started = time.monotonic()
    with connect(data["env"], ca, prefix="REPLICA_DB_", autocommit=True) as conn:
        recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        while not conn.execute("SELECT 1 FROM probe_rows WHERE note = %s", (note,)).fetchone():
            if time.monotonic() - started > 10:
                return {"recovery": recovery, "seen": False}
            time.sleep(0.1)
    return {"recovery": recovery, "seen": True}


def verify_full(data: dict, ca: str) -> dict:
    """verify-full against postgres_ca_cert on every host name the env and migration_env give."""
    env, migration = data["env"], data["migration"]
    targets = {
        "DB_HOST": env,
        "REPLICA_DB_HOST": {**env, "DB_HOST": env["REPLICA_DB_HOST"],
                            "DB_PORT": env["REPLICA_DB_PORT"], "DB_NAME": env["REPLICA_DB_NAME"]},
        "migration DB_HOST": {**env, **migration},
    }  # fmt: skip
    answers = {}
    for name, spec in targets.items():
        try:
            with connect(spec, ca, autocommit=True) as conn:
                answers[name] = conn.execute("SELECT current_user").fetchone()[0]
        except psycopg.Error as exc:
            answers[name] = error(exc)
    return answers


def server_limits(data: dict, ca: str) -> dict:
    """The primary's connection limit, past the pool."""
    with connect({**data["env"], **data["migration"]}, ca, autocommit=True) as conn:
        return {"max_connections": conn.execute("SHOW max_connections").fetchone()[0]}


def redis_probe(data: dict, ca: str) -> dict:
    import redis

    answers = {}
    for name in ("REDIS_URL", "CACHE_REDIS_URL"):
        url = data["env"].get(name)
        if not url:
            continue
        client = redis.Redis.from_url(url, socket_timeout=10)
        client.set("probe", "1")
        policy = client.config_get("maxmemory-policy")["maxmemory-policy"]
        plain = redis.Redis(host=client.connection_pool.connection_kwargs["host"],
                            port=client.connection_pool.connection_kwargs["port"],
                            password=client.connection_pool.connection_kwargs.get("password"),
                            socket_timeout=5)  # fmt: skip
        try:
            plain.ping()
            plain_answer = "answered"
        except redis.RedisError as exc:
            plain_answer = type(exc).__name__
        answers[name] = {"scheme": url.split("://")[0], "get": client.get("probe").decode(),
                         "policy": policy, "plain": plain_answer}  # fmt: skip
    return answers


def s3_probe(data: dict, ca: str) -> dict:
    import boto3

    env = data["env"]
    s3 = boto3.client(
        "s3", endpoint_url=env["S3_ENDPOINT"], region_name=env["S3_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )  # fmt: skip
    key, body = f"media/{uuid.uuid4()}.txt", str(uuid.uuid4())
    s3.put_object(Bucket=env["S3_BUCKET"], Key=key, Body=body.encode(),
                  ACL=env["S3_PERMISSION"], ContentType="text/plain")  # fmt: skip
    url = f"https://{env['S3_ALIAS_HOST']}/{key}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return {"url": url, "same": response.read().decode() == body, "status": response.status}
    except urllib.error.URLError as exc:
        return {"url": url, "error": str(exc)}


def empty(data: dict, ca: str) -> dict:
    """The bucket emptied with the key in data["key"] (the operator's, before a destroy)."""
    import boto3

    env = data["env"]
    s3 = boto3.client(
        "s3", endpoint_url=env["S3_ENDPOINT"], region_name=env["S3_REGION"],
        aws_access_key_id=data["key"]["access_key"],
        aws_secret_access_key=data["key"]["secret_key"],
    )  # fmt: skip
    listed = s3.list_objects_v2(Bucket=env["S3_BUCKET"]).get("Contents", [])
    for item in listed:
        s3.delete_object(Bucket=env["S3_BUCKET"], Key=item["Key"])
    return {"deleted": len(listed)}


def write_load(data: dict, ca: str) -> dict:
    """Rows inserted through the env's pool for data["seconds"], each its own transaction,
    reconnecting after an error (Mastodon's workers retry): one JSON line per commit or error on
    stdout as it happens."""
    deadline, n, conn, table = time.monotonic() + data["seconds"], 0, None, data["table"]
    while time.monotonic() < deadline:
        try:
            if conn is None:
                conn = connect(data["env"], ca, autocommit=True, prepare_threshold=None,
                               tcp_user_timeout=2000)  # fmt: skip
                conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (n int PRIMARY KEY)")
            conn.execute(f"INSERT INTO {table} VALUES (%s)", (n + 1,))
            n += 1
            print(json.dumps({"committed": n, "at": time.time()}), flush=True)
        except psycopg.errors.UniqueViolation:  # committed; its answer was lost with the node
            n += 1
        except psycopg.Error as exc:
            print(json.dumps({"error": error(exc), "at": time.time()}), flush=True)
            conn = None
            time.sleep(0.2)
        time.sleep(0.02)
    with connect(data["env"], ca, autocommit=True, prepare_threshold=None) as check:
        present = [r[0] for r in check.execute(f"SELECT n FROM {table} ORDER BY n").fetchall()]
    return {"present": present}


PROBES = {
    "create_table": create_table,
    "prepared_forced": lambda data, ca: prepared(data, ca, 0),
    "prepared_as_emitted": lambda data, ca: prepared(
        data, ca, None if data["env"].get("PREPARED_STATEMENTS") == "false" else 0
    ),
    "advisory": advisory,
    "replica_read": replica_read,
    "verify_full": verify_full,
    "redis": redis_probe,
    "s3": s3_probe,
    "empty": empty,
    "server_limits": server_limits,
    "write_load": write_load,
}


def main() -> None:
    data = json.loads(sys.stdin.read())
    with tempfile.NamedTemporaryFile("w", suffix=".crt") as ca:
        ca.write(data["ca"])
        ca.flush()
        print(json.dumps(PROBES[sys.argv[1]](data, ca.name)))


if __name__ == "__main__":
    main()
