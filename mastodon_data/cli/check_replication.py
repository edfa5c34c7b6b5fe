"""Replication check: role, lag and active connections of every database host, from the stack
outputs; with --exporters, whether each server's exporters (stack output prometheus_targets)
answer, from a machine in monitoringSources. Exits 1 when a replica is not streaming or lags
past a threshold (or an exporter does not answer), 2 on bad input.

    pulumi stack output --json --show-secrets | mastodon-data check-replication \\
        [--max-lag-bytes N] [--max-lag-seconds S] [--exporters]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import psycopg

from mastodon_data.database import connect, direct_env, lsn

EXPORTER_TIMEOUT = 5  # seconds for an exporter's answer
SETTLE = 1.0  # seconds a replica behind the primary's position may take to reach it
POLL = 0.1  # seconds between two looks at the replica meanwhile

PRIMARY_SQL = """SELECT pg_is_in_recovery(), pg_current_wal_lsn()::text,
    (SELECT count(*) FROM pg_stat_activity
     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())"""
REPLAY_LAG_SQL = """SELECT extract(epoch FROM replay_lag)::float FROM pg_stat_replication
    WHERE application_name = %s"""
REPLICA_SQL = """SELECT pg_is_in_recovery(),
    (SELECT status FROM pg_stat_wal_receiver),
    pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
    (SELECT count(*) FROM pg_stat_activity
     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())"""
POSITIONS_SQL = "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text"
# With backups (archive_mode on): the WAL archiver, readable by Mastodon's role (pg_monitor).
ARCHIVER_SQL = """SELECT current_setting('archive_mode'), archived_count, failed_count,
    last_archived_wal, extract(epoch FROM now() - last_archived_time)::float,
    coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false),
    pg_current_wal_lsn()::text,
    (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')
    FROM pg_stat_archiver"""


def caught_up(primary_lsn: str, receive_lsn: str | None, replay_lsn: str | None) -> bool:
    """The replica has replayed everything it received, and the primary has nothing newer."""
    replay, receive, primary = lsn(replay_lsn), lsn(receive_lsn), lsn(primary_lsn)
    if replay is None or primary is None:
        return False
    return replay >= primary and (receive is None or replay >= receive)


def seconds_behind(
    in_step: bool, reached_after: float | None, replay_lag: float | None, waited: float
) -> float | None:
    """Lag in seconds, never the age of the last replayed commit (on an idle primary that is
    its idle time). 0 when the replica is caught up; the time it took to replay the primary's
    position of the check when it did so within SETTLE; else the primary's replay_lag, and at
    least the time waited for it; None when nothing measured it (the replica not streaming)."""
    if in_step:
        return 0.0
    if reached_after is not None:
        return reached_after
    if replay_lag is None:
        return waited or None
    return max(replay_lag, waited)


def settle(rconn: psycopg.Connection, primary_lsn: str, started: float) -> float | None:
    """Seconds from `started` until the replica replayed `primary_lsn`; None if not in SETTLE."""
    while time.monotonic() - started < SETTLE:
        receive, replay = rconn.execute(POSITIONS_SQL).fetchone()
        if caught_up(primary_lsn, receive, replay):
            return time.monotonic() - started
        time.sleep(POLL)
    return None


def archived_end(wal_file: str, segment_size: int) -> int:
    """The WAL position where `wal_file` (timeline, log, segment in hex) ends."""
    return int(wal_file[8:16], 16) * 2**32 + (int(wal_file[16:24], 16) + 1) * segment_size


def archive_line(name: str, conn: psycopg.Connection) -> tuple[str | None, bool]:
    """(a line on the primary's WAL archiving, or None when it does not archive; healthy)."""
    mode, archived, failed, last_wal, age, failing, current, segment = conn.execute(
        ARCHIVER_SQL
    ).fetchone()
    if mode == "off":
        return None, True
    pending = lsn(current) - archived_end(last_wal, segment) if last_wal else None
    line = (
        f"{name}: WAL archive, {archived} archived, {failed} failed, last "
        f"{last_wal or 'none'}"
        + (f" {age:.1f} s ago" if age is not None else "")
        + f", {pending if pending is not None else '?'} B not yet archived"
    )
    if failing:
        return f"{line}  <- archiving is failing (see the PostgreSQL log)", False
    return line, True


def check(outputs: dict, max_lag_bytes: int, max_lag_seconds: float) -> tuple[list[str], bool]:
    env = direct_env(outputs)
    primary = outputs["primary"]
    lines, healthy = [], True
    with connect(env, primary["private_address"]) as conn:
        in_recovery, primary_lsn, connections = conn.execute(PRIMARY_SQL).fetchone()
        if in_recovery:
            lines.append(f"{primary['name']}: expected the primary, found a standby")
            healthy = False
        else:
            lines.append(f"{primary['name']}: primary, {connections} other connections")
            archive, archive_ok = archive_line(primary["name"], conn)
            lines += [archive] if archive else []
            healthy &= archive_ok
        for replica in outputs.get("replicas", []):
            try:
                with connect(env, replica["private_address"]) as rconn:
                    started = time.monotonic()
                    primary_lsn = conn.execute(PRIMARY_SQL).fetchone()[1]
                    recovery, status, receive_lsn, replay_lsn, rconns = rconn.execute(
                        REPLICA_SQL
                    ).fetchone()
                    in_step = caught_up(primary_lsn, receive_lsn, replay_lsn)
                    reached = None
                    if not in_step and status == "streaming":
                        reached = settle(rconn, primary_lsn, started)
            except psycopg.OperationalError as exc:
                lines.append(f"{replica['name']}: unreachable ({str(exc).strip()})")
                healthy = False
                continue
            waited = time.monotonic() - started if status == "streaming" else 0.0
            replay_lag = conn.execute(REPLAY_LAG_SQL, (replica["name"],)).fetchone()
            lag_s = seconds_behind(in_step, reached, replay_lag and replay_lag[0], waited)
            lag_b = (
                conn.execute(
                    # 0 when the replica replayed WAL written after primary_lsn was read
                    "SELECT GREATEST(pg_wal_lsn_diff(%s, %s), 0)::bigint",
                    (primary_lsn, replay_lsn),
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
                f"{lag_b if lag_b is not None else '?'} B / "
                f"{f'{lag_s:.1f}' if lag_s is not None else '?'} s, "
                f"{rconns} active connections" + (f"  <- {'; '.join(problems)}" if problems else "")
            )
    return lines, healthy


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=EXPORTER_TIMEOUT) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def exporter_lines(groups: list[dict]) -> tuple[list[str], bool]:
    """One line per server of the file_sd `groups`: its exporters, and which do not answer
    (a prober's groups carry their path and parameters as labels)."""
    jobs: dict[str, dict[str, bool]] = {}
    for group in groups:
        labels = group["labels"]
        params = {
            k.removeprefix("__param_"): v for k, v in labels.items() if k.startswith("__param_")
        }
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        path = labels.get("__metrics_path__", "/metrics")
        server = jobs.setdefault(labels.get("server", labels.get("cluster", "?")), {})
        for target in group["targets"]:
            ok = answers(f"{labels.get('__scheme__', 'http')}://{target}{path}{query}")
            server[labels["job"]] = server.get(labels["job"], True) and ok
    lines = []
    for name, state in jobs.items():
        down = [job for job, ok in state.items() if not ok]
        lines.append(
            f"{name}: exporters {', '.join(state)}"
            + (f"  <- {', '.join(down)} not answering" if down else " answering")
        )
    return lines, not any(False in state.values() for state in jobs.values())


def main(argv: list[str] | None = None, prog: str = "mastodon-data check-replication") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--max-lag-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--max-lag-seconds", type=float, default=60.0)
    parser.add_argument(
        "--exporters", action="store_true", help="also ask every exporter (prometheus_targets)"
    )
    args = parser.parse_args(argv)
    try:
        outputs = json.load(sys.stdin)
        env = outputs["mastodon_env"]
        if not isinstance(env, dict) or env.get("DB_PASS") in (None, "[secret]"):
            raise KeyError("mastodon_env (run `pulumi stack output --json --show-secrets`)")
        outputs["primary"]["private_address"]
        groups = outputs["prometheus_targets"] if args.exporters else []
    except (ValueError, KeyError, TypeError) as exc:
        print(f"error: stack outputs on stdin lack {exc}", file=sys.stderr)
        return 2
    try:
        lines, healthy = check(outputs, args.max_lag_bytes, args.max_lag_seconds)
    except psycopg.OperationalError as exc:
        print(f"error: cannot reach the primary: {str(exc).strip()}", file=sys.stderr)
        return 1
    exporters, answering = exporter_lines(groups)
    lines, healthy = lines + exporters, healthy and answering
    print("\n".join(lines))
    return 0 if healthy else 1
