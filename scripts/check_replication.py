#!/usr/bin/env python3
"""Replication check: role, lag and active connections of every database host, from the stack
outputs. Exits 1 when a replica is not streaming or lags past a threshold, 2 on bad input.

    pulumi stack output --json --show-secrets | python3 scripts/check_replication.py
"""

from __future__ import annotations

import argparse
import json
import sys

import psycopg

CONNECT_TIMEOUT = 5  # seconds per host

PRIMARY_SQL = """SELECT pg_is_in_recovery(), pg_current_wal_lsn()::text,
    (SELECT count(*) FROM pg_stat_activity
     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())"""
REPLICA_SQL = """SELECT pg_is_in_recovery(),
    (SELECT status FROM pg_stat_wal_receiver),
    pg_last_wal_replay_lsn()::text,
    CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
         ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float END,
    (SELECT count(*) FROM pg_stat_activity
     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())"""


def connect(env: dict, host: str) -> psycopg.Connection:
    return psycopg.connect(
        host=host,
        port=env["DB_PORT"],
        dbname=env["DB_NAME"],
        user=env["DB_USER"],
        password=env["DB_PASS"],
        sslmode=env.get("DB_SSLMODE", "require"),
        connect_timeout=CONNECT_TIMEOUT,
        autocommit=True,
        application_name="mastodon-data-check",
    )


def check(outputs: dict, max_lag_bytes: int, max_lag_seconds: float) -> tuple[list[str], bool]:
    env = outputs["mastodon_env"]
    primary = outputs["primary"]
    lines, healthy = [], True
    with connect(env, primary["private_address"]) as conn:
        in_recovery, primary_lsn, connections = conn.execute(PRIMARY_SQL).fetchone()
        if in_recovery:
            lines.append(f"{primary['name']}: expected the primary, found a standby")
            healthy = False
        else:
            lines.append(f"{primary['name']}: primary, {connections} other connections")
        for replica in outputs.get("replicas", []):
            try:
                with connect(env, replica["private_address"]) as rconn:
                    recovery, status, replay_lsn, lag_s, rconns = rconn.execute(
                        REPLICA_SQL
                    ).fetchone()
            except psycopg.OperationalError as exc:
                lines.append(f"{replica['name']}: unreachable ({str(exc).strip()})")
                healthy = False
                continue
            lag_b = (
                conn.execute(
                    "SELECT pg_wal_lsn_diff(%s, %s)::bigint", (primary_lsn, replay_lsn)
                ).fetchone()[0]
                if replay_lsn
                else None
            )
            problems = []
            if not recovery:
                problems.append("not a standby")
            if status != "streaming":
                problems.append(f"wal receiver {status or 'not running'}")
            if lag_b is not None and lag_b > max_lag_bytes:
                problems.append(f"lag {lag_b} B > {max_lag_bytes} B")
            if lag_s is not None and lag_s > max_lag_seconds:
                problems.append(f"lag {lag_s:.1f} s > {max_lag_seconds} s")
            healthy &= not problems
            lines.append(
                f"{replica['name']}: replica, {status or 'not streaming'}, lag "
                f"{lag_b if lag_b is not None else '?'} B / {lag_s or 0:.1f} s, "
                f"{rconns} active connections" + (f"  <- {'; '.join(problems)}" if problems else "")
            )
    return lines, healthy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-lag-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--max-lag-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        outputs = json.load(sys.stdin)
        env = outputs["mastodon_env"]
        if not isinstance(env, dict) or env.get("DB_PASS") in (None, "[secret]"):
            raise KeyError("mastodon_env (run `pulumi stack output --json --show-secrets`)")
        outputs["primary"]["private_address"]
    except (ValueError, KeyError, TypeError) as exc:
        print(f"error: stack outputs on stdin lack {exc}", file=sys.stderr)
        return 2
    try:
        lines, healthy = check(outputs, args.max_lag_bytes, args.max_lag_seconds)
    except psycopg.OperationalError as exc:
        print(f"error: cannot reach the primary: {str(exc).strip()}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
