#!/usr/bin/env python3
"""The replica health endpoint, as Patroni's `GET /replica?lag=`: 200 when this server is a
replica, streaming from the primary and within the lag bounds; 503 otherwise. The body (JSON)
says why. A load balancer's health check (HTTP, any path) decides with it which replicas get
new read connections.

A replica that is not streaming because its primary does not answer stays in rotation: no
write can land anywhere, so its data is as new as the cluster's, and reads go on until a
failover. Not streaming while the primary answers means it falls behind: 503.

Installed and started by replica_health.py; runs as postgres (psql over the local socket, peer
authentication, no password). Stdlib only: `python3 health_server.py <config.json>`.
`?lag=<bytes>` overrides the byte bound for one request, as in Patroni.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

QUERY_TIMEOUT = 3  # seconds; a server that cannot answer in this is not healthy
PRIMARY_TIMEOUT = 1  # seconds for the primary to accept a TCP connection
CONNINFO_PAIR = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")  # libpq key=value
# Lag in bytes: received but not replayed. In seconds: 0 when all received WAL is replayed,
# else the age of the last replayed transaction (replay is behind while WAL keeps arriving).
# Received behind replay (a walreceiver starting over from its segment's start) is no lag.
QUERY = """SELECT json_build_object(
  'in_recovery', pg_is_in_recovery(),
  'streaming', coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false),
  'primary_conninfo', current_setting('primary_conninfo', true),
  'lag_bytes', greatest(0, coalesce(
    pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)),
  'lag_seconds', CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN coalesce(pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn(), true) THEN 0
    ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END)"""


def server_state(config: dict) -> dict:
    """What PostgreSQL says of itself, or {"error": ...} when it does not answer."""
    argv = [
        f"/usr/lib/postgresql/{config['postgres_version']}/bin/psql",
        "-X", "-A", "-t", "-w", "-p", str(config["port"]), "-d", "postgres", "-c", QUERY,
    ]  # fmt: skip
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=QUERY_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": f"PostgreSQL did not answer within {QUERY_TIMEOUT} s"}
    if result.returncode != 0:
        return {"error": result.stderr.strip()[-300:] or f"psql exit code {result.returncode}"}
    state = json.loads(result.stdout)
    conninfo = state.pop("primary_conninfo") or ""
    if state["in_recovery"] and not state["streaming"]:
        state["primary_answers"] = primary_answers(conninfo)
    return state


def primary_answers(conninfo: str) -> bool:
    """Whether the primary named in primary_conninfo accepts a connection (TCP, or its Unix
    socket when host is a directory)."""
    pairs = {k: v.strip("'") for k, v in CONNINFO_PAIR.findall(conninfo)}
    host, port = pairs.get("host", ""), int(pairs.get("port", "5432"))
    if host.startswith("/"):
        family, address = socket.AF_UNIX, f"{host}/.s.PGSQL.{port}"
    else:
        family, address = socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(PRIMARY_TIMEOUT)
            probe.connect(address)
    except OSError:
        return False
    return True


def verdict(state: dict, max_bytes: int, max_seconds: float) -> tuple[int, dict]:
    """(HTTP status, body) for a server's state against the bounds. Pure."""
    body = {**state, "max_lag_bytes": max_bytes, "max_lag_seconds": max_seconds}
    if "error" in state:
        reason = f"PostgreSQL unreachable: {state['error']}"
    elif not state["in_recovery"]:
        reason = "not a replica (this server is a primary)"
    elif not state["streaming"] and state.get("primary_answers", True):
        reason = "not streaming from the primary, which answers"
    elif state["lag_bytes"] > max_bytes:
        reason = f"{state['lag_bytes']} bytes behind (more than {max_bytes})"
    elif state["lag_seconds"] > max_seconds:
        reason = f"{state['lag_seconds']:.1f} s behind (more than {max_seconds:g})"
    elif not state["streaming"]:
        return 200, {**body, "healthy": True, "reason": "primary unreachable: serving all it got"}
    else:
        return 200, {**body, "healthy": True, "reason": "streaming replica within the lag bounds"}
    return 503, {**body, "healthy": False, "reason": reason}


def max_bytes_asked(path: str, default: int) -> int:
    """`?lag=<bytes>` (Patroni's parameter), else the configured bound."""
    values = parse_qs(urlsplit(path).query).get("lag", [])
    try:
        return int(values[0]) if values else default
    except ValueError:
        return default


def handler_for(config: dict) -> type[BaseHTTPRequestHandler]:
    class Health(BaseHTTPRequestHandler):
        def answer(self, send_body: bool) -> None:
            max_bytes = max_bytes_asked(self.path, int(config["replica_max_lag_bytes"]))
            status, body = verdict(
                server_state(config), max_bytes, float(config["replica_max_lag_seconds"])
            )
            data = (json.dumps(body, sort_keys=True) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if send_body:
                self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.answer(send_body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self.answer(send_body=False)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            pass  # a check every few seconds: no log line each

    return Health


def main() -> None:
    with open(sys.argv[1]) as handle:
        config = json.load(handle)
    address = (config["private_address"], int(config["replica_health_port"]))
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(address, handler_for(config)).serve_forever()


if __name__ == "__main__":
    main()
