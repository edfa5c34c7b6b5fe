#!/usr/bin/env python3
"""The exporters the alert rules read (docs/operators/monitoring.md), on this server's private
address only: Debian's prometheus-postgres-exporter (with the project's custom queries) and
prometheus-node-exporter, and the pinned upstream pgbouncer_exporter (with the pool) and
ssl_exporter, which `make exporters` builds and the operator puts in /usr/local/bin. Runs after
this host's own step, its pooler step and the monitor step. Idempotent: a second run changes
nothing.

- The exporters log in as the monitor role (pg_monitor; PgBouncer's stats_users) through the
  local socket; its password is in a 0600 pass file (PGPASSFILE), never on a command line.
- Each exporter's command is a launcher file (<CONF_DIR>/<job>.sh, no secret in it), which a
  systemd unit runs; without systemd (the lab) it is started detached, with a pid file in
  /var/run/postgresql, and the lab's boot starts the launchers again.
- The PostgreSQL and PgBouncer exporters run as postgres (pgbouncer_exporter reads PgBouncer's
  open files in /proc), the others as prometheus. Debian's own units of its two exporters
  (every address) are masked.

stdin (JSON): ExportersParams (mastodon_data/host_params.py) and the secret monitor_password.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from common import (
    APT_LOCK_WAIT,
    POLL,
    HostError,
    log,
    log_tail,
    main_wrapper,
    pgpass_line,
    read_params,
    run,
    systemd_running,
    write_if_changed,
)

CONF_DIR = Path("/etc/mastodon-data/exporters")
PASSFILE = CONF_DIR / "monitor.pgpass"  # 0600 postgres: the monitor role's password
QUERIES = CONF_DIR / "postgres_queries.yaml"
SSL_CONFIG = CONF_DIR / "ssl_exporter.yml"
SOCKET_DIR = "/var/run/postgresql"
RUN_DIR = Path(SOCKET_DIR)  # pid files (no systemd): a tmpfs, emptied at boot
LOG_DIR = Path("/var/log/postgresql")
UNIT_DIR = Path("/etc/systemd/system")
BUILT_DIR = Path("/usr/local/bin")
# The pinned upstream builds (lab/build_exporters.sh): binary -> the version it must report.
BUILT = {"pgbouncer_exporter": "0.12.1", "ssl_exporter": "2.4.1"}
DEBIAN = {"postgres": "prometheus-postgres-exporter", "node": "prometheus-node-exporter"}
AS_USER = "setpriv --reuid={user} --regid={user} --init-groups --"  # util-linux
START_WAIT = 30  # seconds for an exporter to answer /metrics, or to exit when stopped
# The ssl prober's module the targets name (monitoring/targets.py): PostgreSQL's STARTTLS. It
# reads the certificates' dates; checking who signed them is the clients' part.
SSL_MODULES = (
    "modules:\n"
    "  postgres:\n"
    "    prober: tcp\n"
    "    tcp:\n"
    "      starttls: postgres\n"
    "    tls_config:\n"
    "      insecure_skip_verify: true\n"
)


def command(job: str, params: dict) -> tuple[str, list[str], dict[str, str]]:
    """(user, argv, environment) of one exporter."""
    listen = f"--web.listen-address={params['private_address']}:{params['exporter_ports'][job]}"
    login = {"PGPASSFILE": str(PASSFILE)}
    user = params["monitor_user"]
    if job == "postgres":
        dsn = f"postgresql://{user}@:{params['port']}/postgres?host={SOCKET_DIR}&sslmode=disable"
        argv = [f"/usr/bin/{DEBIAN[job]}", listen, f"--extend.query-path={QUERIES}"]
        return "postgres", argv, {**login, "DATA_SOURCE_NAME": dsn}
    if job == "node":
        return "prometheus", [f"/usr/bin/{DEBIAN[job]}", listen], {}
    if job == "pgbouncer":
        console = (
            f"postgres://{user}@:{params['pgbouncer_port']}/pgbouncer"
            f"?host={SOCKET_DIR}&sslmode=disable"
        )
        argv = [str(BUILT_DIR / "pgbouncer_exporter"), listen,
                f"--pgBouncer.connectionString={console}",
                f"--pgBouncer.pid-file={SOCKET_DIR}/pgbouncer.pid"]  # fmt: skip
        return "postgres", argv, login
    if job == "ssl":
        argv = [str(BUILT_DIR / "ssl_exporter"), listen, f"--config.file={SSL_CONFIG}"]
        return "prometheus", argv, {}
    raise HostError(f"unknown exporter {job!r}")


def launcher_text(job: str, params: dict) -> str:
    user, argv, env = command(job, params)
    assignments = [f"{key}={shlex.quote(value)}" for key, value in sorted(env.items())]
    line = " ".join([AS_USER.format(user=user), "env", *assignments, *map(shlex.quote, argv)])
    return f"#!/bin/sh\n# Written by mastodon-data: the {job} exporter.\nexec {line}\n"


def unit_text(job: str) -> str:
    return (
        "[Unit]\n"
        f"Description=mastodon-data: the {job} exporter\n"
        "After=network-online.target postgresql.service pgbouncer.service\n"
        "[Service]\n"
        f"ExecStart=/bin/sh {CONF_DIR / f'{job}.sh'}\n"
        "Restart=always\n"
        "RestartSec=5\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def unit_name(job: str) -> str:
    return f"mastodon-data-{job}-exporter"


def install() -> bool:
    """Debian's two exporters, their own units masked and stopped first (they would listen on
    every address, on the ports ours take)."""
    if systemd_running():
        run(["systemctl", "mask", "--now", *DEBIAN.values()])
    missing = [package for package in DEBIAN.values() if not Path(f"/usr/bin/{package}").exists()]
    if not missing:
        return False
    log(f"installing {' '.join(missing)}")
    apt = ["apt-get", "-q", "-y", "-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT}"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(apt + ["update"], env=env)
    run(apt + ["install", "--no-install-recommends", *missing], env=env)
    return True


def check_built(jobs: list[str]) -> None:
    """The upstream builds the jobs need, at their pinned versions."""
    for name in (f"{job}_exporter" for job in jobs if f"{job}_exporter" in BUILT):
        binary, version = BUILT_DIR / name, BUILT[name]
        fix = (
            f"build it with `make exporters` and copy it to {binary} (docs/operators/monitoring.md)"
        )
        if not os.access(binary, os.X_OK):
            raise HostError(f"{binary} is missing: {fix}")
        shown = run([str(binary), "--version"], check=False)
        if f"version {version}" not in shown.stdout + shown.stderr:
            raise HostError(f"{binary} is not version {version}: {fix}")


def write_files(params: dict, jobs: list[str]) -> dict[str, bool]:
    """Every job's files; job -> whether one it reads changed (it restarts then)."""
    CONF_DIR.mkdir(parents=True, exist_ok=True)
    for directory in (CONF_DIR.parent, CONF_DIR):  # the steps run with umask 077
        directory.chmod(0o755)
    password = pgpass_line("*", "*", "*", params["monitor_user"], params["monitor_password"])
    login = write_if_changed(PASSFILE, password + "\n", mode=0o600, owner="postgres")
    reads = {
        "postgres": login | write_if_changed(QUERIES, params["postgres_queries"], mode=0o644),
        "pgbouncer": login,
        "ssl": write_if_changed(SSL_CONFIG, SSL_MODULES, mode=0o644),
    }
    changed = {}
    for job in jobs:
        launcher = CONF_DIR / f"{job}.sh"
        changed[job] = write_if_changed(launcher, launcher_text(job, params), mode=0o755)
        changed[job] |= reads.get(job, False)
        if systemd_running():
            unit = UNIT_DIR / f"{unit_name(job)}.service"
            changed[job] |= write_if_changed(unit, unit_text(job))
    return changed


# --- the services, with systemd or (no systemd, as in the lab) on their own ------------------
def pidfile(job: str) -> Path:
    return RUN_DIR / f"{unit_name(job)}.pid"


def pid(job: str, params: dict) -> int | None:
    """The running exporter's pid (its binary's name, as the kernel shortens it)."""
    binary = Path(command(job, params)[1][0]).name[:15]
    try:
        number = int(pidfile(job).read_text().split()[0])
        comm = Path(f"/proc/{number}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    return number if comm == binary else None


def start(job: str) -> None:
    log(f"starting the {job} exporter")
    if systemd_running():
        run(["systemctl", "daemon-reload"])
        run(["systemctl", "enable", "--now", unit_name(job)])
        return
    with open(LOG_DIR / f"{unit_name(job)}.log", "ab") as output:
        process = subprocess.Popen(
            ["/bin/sh", str(CONF_DIR / f"{job}.sh")],
            stdin=subprocess.DEVNULL, stdout=output, stderr=output,
            start_new_session=True, cwd="/",
        )  # fmt: skip
    pidfile(job).write_text(f"{process.pid}\n")


def stop(job: str, params: dict) -> None:
    if systemd_running():
        run(["systemctl", "stop", unit_name(job)])
        return
    number = pid(job, params)
    if number is None:
        return
    os.kill(number, signal.SIGTERM)
    deadline = time.monotonic() + START_WAIT
    while pid(job, params) is not None:
        if time.monotonic() > deadline:
            raise HostError(f"the {job} exporter (pid {number}) did not stop in {START_WAIT} s")
        time.sleep(POLL)


def running(job: str, params: dict) -> bool:
    if systemd_running():
        active = run(["systemctl", "is-active", "--quiet", unit_name(job)], check=False)
        return active.returncode == 0
    return pid(job, params) is not None


def apply(job: str, params: dict, changed: bool) -> str:
    if not running(job, params):
        start(job)
        return "started"
    if changed:
        stop(job, params)
        start(job)
        return "restarted"
    return "unchanged"


def scrape(job: str, params: dict) -> str:
    """The exporter's /metrics, once it answers (bounded)."""
    url = f"http://{params['private_address']}:{params['exporter_ports'][job]}/metrics"
    deadline = time.monotonic() + START_WAIT
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode(errors="replace")
        except OSError as exc:
            if time.monotonic() > deadline:
                raise HostError(
                    f"the {job} exporter does not answer {url} after {START_WAIT} s ({exc}); "
                    f"see {LOG_DIR / f'{unit_name(job)}.log'} or journalctl -u {unit_name(job)}"
                ) from None
            time.sleep(POLL * 5)


# What proves an exporter reads its source: a metric line and the value it must have.
UP = {"postgres": "pg_up", "pgbouncer": "pgbouncer_up"}


def probe(job: str, params: dict) -> str:
    text = scrape(job, params)
    metric = UP.get(job)
    if metric is None:
        return "ok"
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(f"{metric} ")]
    if values != ["1"]:
        log_file = LOG_DIR / f"{unit_name(job)}.log"
        raise HostError(
            f"the {job} exporter answers but {metric} is {values or 'absent'}: it cannot log "
            f"in as {params['monitor_user']}; {log_file} ends: {log_tail(log_file, 0, 600)}"
        )
    return "ok"


def main() -> dict:
    params = read_params()
    jobs = list(params["exporter_ports"])
    changed = ["installed"] if install() else []
    check_built(jobs)
    files = write_files(params, jobs)
    changed += [f"{job} exporter configured" for job, touched in files.items() if touched]
    for job in jobs:
        action = apply(job, params, files[job])
        if action != "unchanged":
            changed.append(f"{job} exporter {action}")
    for line in changed:
        log(line)
    return {
        "role": "exporters",
        "changed": changed,
        "listen": {
            job: f"{params['private_address']}:{params['exporter_ports'][job]}" for job in jobs
        },  # fmt: skip
        "probe": {job: probe(job, params) for job in jobs},
    }


if __name__ == "__main__":
    main_wrapper(main)
