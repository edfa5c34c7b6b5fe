#!/usr/bin/env python3
"""The replica health endpoint (health_server.py) on this server: installed under
/opt/mastodon-data, run as postgres by systemd (a unit of its own, restarted when it exits) or,
where systemd does not run (the lab), detached with a pid file. It listens on the private
address only. Runs on every server of the stack, the primary too (it answers 503 there), so a
failover needs no step to move the endpoint. Idempotent: a second run changes nothing.

stdin (JSON): ReplicaHealthParams (mastodon_data/host_params.py).
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import health_server
from common import (
    POLL,
    HostError,
    log,
    main_wrapper,
    read_params,
    run,
    systemd_running,
    write_if_changed,
)

HOME = Path("/opt/mastodon-data")
SERVER = HOME / "health_server.py"
CONFIG = HOME / "replica-health.json"
PIDFILE = Path("/var/run/postgresql/mastodon-data-replica-health.pid")
LOGFILE = Path("/var/log/postgresql/mastodon-data-replica-health.log")
UNIT_NAME = "mastodon-data-replica-health"
UNIT = Path(f"/etc/systemd/system/{UNIT_NAME}.service")
START_WAIT = 15  # seconds for the endpoint to listen, or to exit when stopped


def unit_text() -> str:
    return (
        "[Unit]\n"
        "Description=mastodon-data replica health endpoint (HTTP 200: streaming replica)\n"
        "After=network-online.target postgresql.service\n\n"
        "[Service]\n"
        "User=postgres\nGroup=postgres\n"
        f"ExecStart=/usr/bin/python3 {SERVER} {CONFIG}\n"
        "Restart=always\nRestartSec=1\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def write_files(params: dict) -> bool:
    """The server, its configuration and (with systemd) its unit; True when any changed."""
    HOME.mkdir(mode=0o755, exist_ok=True)
    config = {
        "postgres_version": int(params["postgres_version"]),
        "port": int(params["port"]),
        "private_address": params["private_address"],
        "replica_health_port": int(params["replica_health_port"]),
        "replica_max_lag_bytes": int(params["replica_max_lag_bytes"]),
        "replica_max_lag_seconds": int(params["replica_max_lag_seconds"]),
    }
    changed = write_if_changed(SERVER, Path(health_server.__file__).read_text())
    changed |= write_if_changed(CONFIG, json.dumps(config, indent=2, sort_keys=True) + "\n")
    if systemd_running() and write_if_changed(UNIT, unit_text()):
        run(["systemctl", "daemon-reload"])
        changed = True
    return changed


def pid() -> int | None:
    try:
        number = int(PIDFILE.read_text().split()[0])
        cmdline = Path(f"/proc/{number}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return number if str(SERVER).encode() in cmdline else None


def running() -> bool:
    if systemd_running():
        return run(["systemctl", "is-active", "--quiet", UNIT_NAME], check=False).returncode == 0
    return pid() is not None


def start() -> None:
    log("starting the replica health endpoint")
    if systemd_running():
        run(["systemctl", "enable", "--now", UNIT_NAME])
        return
    # Detached as postgres, its pid in a file; the lab's boot starts it the same way.
    script = f'echo $$ > {PIDFILE} && exec "$@" </dev/null >>{LOGFILE} 2>&1'
    argv = ["setsid", "-f", "sh", "-c", script, "sh", "/usr/bin/python3", str(SERVER), str(CONFIG)]
    run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv])


def stop() -> None:
    if systemd_running():
        run(["systemctl", "stop", UNIT_NAME])
        return
    number = pid()
    if number is None:
        return
    os.kill(number, signal.SIGTERM)
    deadline = time.monotonic() + START_WAIT
    while pid() is not None:
        if time.monotonic() > deadline:
            raise HostError(f"the health endpoint (pid {number}) did not stop in {START_WAIT} s")
        time.sleep(POLL)


def ask(params: dict) -> dict:
    """The endpoint's answer (status and body), once it listens: proves it end to end."""
    url = f"http://{params['private_address']}:{params['replica_health_port']}/replica"
    deadline = time.monotonic() + START_WAIT
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return {"status": response.status, **json.load(response)}
        except urllib.error.HTTPError as answer:
            return {"status": answer.code, **json.load(answer)}
        except OSError as exc:  # refused, unreachable, timed out
            if time.monotonic() > deadline:
                raise HostError(f"the health endpoint {url} does not answer: {exc}") from None
            time.sleep(POLL)


def main() -> dict:
    params = read_params()
    changed = []
    if write_files(params):
        changed.append("configuration written")
    if not running():
        start()
        changed.append("started")
    elif changed:
        stop()
        start()
        changed.append("restarted")
    for line in changed:
        log(line)
    answer = ask(params)
    return {
        "role": "replica-health",
        "changed": changed,
        "listen": f"{params['private_address']}:{params['replica_health_port']}",
        "status": answer["status"],
        "reason": answer["reason"],
    }


if __name__ == "__main__":
    main_wrapper(main)
