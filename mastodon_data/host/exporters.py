#!/usr/bin/env python3
"""The exporters the alert rules read (docs/operators/monitoring.md), on this server's private
address only: Debian's prometheus-postgres-exporter (with the project's custom queries) and
prometheus-node-exporter, and the pinned upstream pgbouncer_exporter (with the pool) and
ssl_exporter, which `make exporters` builds and the program copies to a staging directory
(mastodon_data/monitoring/builds.py), installed from there into /usr/local/bin (0755 root) when
its checksum differs, its version checked; with backups, pgBackRest's state as node_exporter
textfile metrics (backup_metrics.py, every backup_metrics.REPEAT seconds). Runs after this
host's own step, its pooler, backup and monitor steps. Idempotent: a second run changes nothing.

- The exporters log in as the monitor role (pg_monitor; PgBouncer's stats_users) through the
  local socket; its password is in a 0600 pass file (PGPASSFILE), never on a command line.
- Each exporter's command is a launcher file (<CONF_DIR>/<job>.sh, no secret in it), which a
  systemd unit runs; without systemd (the lab) it is started detached, with a pid file in
  /var/run/postgresql, and the lab's boot starts the launchers again.
- The PostgreSQL and PgBouncer exporters run as postgres (pgbouncer_exporter reads PgBouncer's
  open files in /proc), the others as prometheus. Debian's own units of its two exporters
  (every address) are masked.
- The backup metrics (job `pgbackrest`, no port: node_exporter serves them) run as root, as
  pgBackRest's postgres; with systemd a oneshot service on a timer, without it a launcher that
  repeats (`--every`).

stdin (JSON): ExportersParams (mastodon_data/host_params.py) and the secret monitor_password.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import backup_metrics  # shipped with this step: copied to the server for its timer
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
METRICS_SCRIPT = CONF_DIR / "backup_metrics.py"
# node_exporter's textfile collector reads *.prom here (Debian's default, passed explicitly).
TEXTFILE_DIR = Path("/var/lib/prometheus/node-exporter")
BACKUP_METRICS = TEXTFILE_DIR / "pgbackrest.prom"
SOCKET_DIR = "/var/run/postgresql"
RUN_DIR = Path(SOCKET_DIR)  # pid files (no systemd): a tmpfs, emptied at boot
LOG_DIR = Path("/var/log/postgresql")
UNIT_DIR = Path("/etc/systemd/system")
BUILT_DIR = Path("/usr/local/bin")
BUILT_JOBS = ("pgbouncer", "ssl")  # the upstream builds the program ships: <job>_exporter
DEBIAN = {"postgres": "prometheus-postgres-exporter", "node": "prometheus-node-exporter"}
# The Python library backup_metrics.py writes its file with, and where Debian installs it.
CLIENT_PACKAGE = {
    "python3-prometheus-client": Path("/usr/lib/python3/dist-packages/prometheus_client")
}
BACKUP_JOB = "pgbackrest"  # the backup metrics, beside the exporters
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
    if job == BACKUP_JOB:
        return "root", backup_metrics_argv(params) + [f"--every={backup_metrics.REPEAT}"], {}
    listen = f"--web.listen-address={params['private_address']}:{params['exporter_ports'][job]}"
    login = {"PGPASSFILE": str(PASSFILE)}
    user = params["monitor_user"]
    if job == "postgres":
        dsn = f"postgresql://{user}@:{params['port']}/postgres?host={SOCKET_DIR}&sslmode=disable"
        argv = [f"/usr/bin/{DEBIAN[job]}", listen, f"--extend.query-path={QUERIES}"]
        return "postgres", argv, {**login, "DATA_SOURCE_NAME": dsn}
    if job == "node":
        textfiles = f"--collector.textfile.directory={TEXTFILE_DIR}"
        return "prometheus", [f"/usr/bin/{DEBIAN[job]}", listen, textfiles], {}
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


def backup_metrics_argv(params: dict) -> list[str]:
    """One run of backup_metrics.py (the timer's service; the launcher adds --every)."""
    stanza = params["stanza"]
    return [
        "/usr/bin/python3",
        str(METRICS_SCRIPT),
        f"--stanza={stanza}",
        f"--output={BACKUP_METRICS}",
    ]


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


def backup_units(params: dict) -> dict[str, str]:
    """The backup metrics' oneshot service and its timer (every backup_metrics.REPEAT s)."""
    name = unit_name(BACKUP_JOB)
    service = (
        "[Unit]\n"
        "Description=mastodon-data: pgBackRest's state for node_exporter\n"
        "After=network-online.target postgresql.service\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={shlex.join(backup_metrics_argv(params))}\n"
        f"TimeoutStartSec={backup_metrics.INFO_TIMEOUT + 30}\n"
    )
    timer = (
        "[Unit]\n"
        "Description=mastodon-data: pgBackRest's state for node_exporter, on a timer\n"
        "[Timer]\n"
        "OnActiveSec=0\n"
        f"OnUnitActiveSec={backup_metrics.REPEAT}s\n"
        "AccuracySec=5s\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{name}.service": service, f"{name}.timer": timer}


def unit_files(job: str, params: dict) -> dict[str, str]:
    if job == BACKUP_JOB:
        return backup_units(params)
    return {f"{unit_name(job)}.service": unit_text(job)}


def unit_name(job: str) -> str:
    return f"mastodon-data-{job}-exporter"


def systemd_unit(job: str) -> str:
    """The unit that runs the job: the backup metrics' is their timer."""
    return unit_name(job) + (".timer" if job == BACKUP_JOB else ".service")


def install(jobs: list[str]) -> bool:
    """Debian's two exporters, their own units masked and stopped first (they would listen on
    every address, on the ports ours take), and the backup metrics' Python library."""
    if systemd_running():
        run(["systemctl", "mask", "--now", *DEBIAN.values()])
    wanted = {package: Path(f"/usr/bin/{package}") for package in DEBIAN.values()}
    if BACKUP_JOB in jobs:
        wanted |= CLIENT_PACKAGE
    missing = [package for package, path in wanted.items() if not path.exists()]
    if not missing:
        return False
    log(f"installing {' '.join(missing)}")
    apt = ["apt-get", "-q", "-y", "-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT}"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(apt + ["update"], env=env)
    run(apt + ["install", "--no-install-recommends", *missing], env=env)
    return True


def shipped(params: dict, job: str) -> dict[str, str]:
    """The build of a job's binary the program shipped: version, sha256, staged (its copy)."""
    name = f"{job}_exporter"
    if name not in params["exporter_builds"]:
        raise HostError(f"the program shipped no {name}: run pulumi up (it copies the builds)")
    return params["exporter_builds"][name]


def install_built(params: dict, jobs: list[str]) -> list[str]:
    """Each shipped build from its staged copy into BUILT_DIR (0755 root), where the installed
    binary's checksum differs; the jobs whose binary was installed."""
    installed = []
    for job in (job for job in jobs if job in BUILT_JOBS):
        build, target = shipped(params, job), BUILT_DIR / f"{job}_exporter"
        if target.is_file() and sha256(target.read_bytes()) == build["sha256"]:
            continue
        staged = Path(build["staged"])
        again = "run pulumi up again (it copies the build anew)"
        try:
            content = staged.read_bytes()
        except OSError as exc:
            raise HostError(f"{staged}, the copy the program shipped, is unreadable "
                            f"({exc.strerror}): {again}") from None  # fmt: skip
        if sha256(content) != build["sha256"]:
            raise HostError(f"{staged} is not the build the program shipped (its checksum "
                            f"differs): {again}")  # fmt: skip
        tmp = target.with_name(f".{target.name}.tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o755), "wb") as out:
            out.write(content)
        os.chmod(tmp, 0o755)
        os.chown(tmp, 0, 0)
        os.replace(tmp, target)
        installed.append(job)
    return installed


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def check_built(params: dict, jobs: list[str]) -> None:
    """The installed upstream builds report the versions the program shipped."""
    for job in (job for job in jobs if job in BUILT_JOBS):
        binary, version = BUILT_DIR / f"{job}_exporter", shipped(params, job)["version"]
        try:  # a binary built for another system does not even start
            shown = run([str(binary), "--version"], check=False)
            output = (shown.stdout + shown.stderr).strip()
        except OSError as exc:
            output = str(exc)
        if f"version {version}" not in output:
            raise HostError(
                f"{binary} does not report version {version} ({output[:200]!r}): build it "
                f"with `make exporters` on the machine that runs pulumi, then pulumi up"
            )


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
    if BACKUP_JOB in jobs:
        TEXTFILE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        script = Path(backup_metrics.__file__).read_text()
        reads[BACKUP_JOB] = write_if_changed(METRICS_SCRIPT, script, mode=0o755)
    changed = {}
    for job in jobs:
        launcher = CONF_DIR / f"{job}.sh"
        changed[job] = write_if_changed(launcher, launcher_text(job, params), mode=0o755)
        changed[job] |= reads.get(job, False)
        if systemd_running():
            for name, text in unit_files(job, params).items():
                changed[job] |= write_if_changed(UNIT_DIR / name, text)
    return changed


def retire_backup_metrics(params: dict) -> bool:
    """Backups turned off: the backup metrics stopped and their files gone (True if any was)."""
    files = [CONF_DIR / f"{BACKUP_JOB}.sh", METRICS_SCRIPT, BACKUP_METRICS,
             *(UNIT_DIR / name for name in backup_units(params))]  # fmt: skip
    if not any(path.exists() for path in files):
        return False
    if systemd_running():
        run(["systemctl", "disable", "--now", systemd_unit(BACKUP_JOB)], check=False)
    else:
        stop(BACKUP_JOB, params)
    for path in files:
        path.unlink(missing_ok=True)
    return True


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
        run(["systemctl", "enable", "--now", systemd_unit(job)])
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
        run(["systemctl", "stop", systemd_unit(job)])
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
        active = run(["systemctl", "is-active", "--quiet", systemd_unit(job)], check=False)
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


def probe_backup_metrics(params: dict) -> str:
    """node_exporter serves the backup metrics, and pgbackrest info answered (bounded)."""
    stanza = params["stanza"]
    wanted = f'pgbackrest_info_success{{stanza="{stanza}"}} 1'
    deadline = time.monotonic() + START_WAIT
    while wanted not in scrape("node", params).splitlines():
        if time.monotonic() > deadline:
            log_file = LOG_DIR / f"{unit_name(BACKUP_JOB)}.log"
            raise HostError(
                f"node_exporter does not serve `{wanted}` after {START_WAIT} s: pgbackrest info "
                f"fails, or {BACKUP_METRICS} is not written; see {log_file} or journalctl -u "
                f"{unit_name(BACKUP_JOB)}"
            )
        time.sleep(POLL * 10)
    return "ok"


def probe(job: str, params: dict) -> str:
    """The exporter answers and, where it has one, its up metric is 1 (bounded). Scraped again
    while it is not: postgres_exporter 0.17 (Debian 13) keeps its connection, and the first
    scrape after the server restarted (a switchover's old primary) reports pg_up 0 for the
    broken one ("driver: bad connection"), the next reconnects."""
    if job == BACKUP_JOB:
        return probe_backup_metrics(params)
    metric = UP.get(job)
    if metric is None:
        scrape(job, params)
        return "ok"
    deadline = time.monotonic() + START_WAIT
    while True:
        text = scrape(job, params)
        values = [line.split()[-1] for line in text.splitlines() if line.startswith(f"{metric} ")]
        if values == ["1"] or time.monotonic() > deadline:
            break
        time.sleep(POLL * 10)
    if values != ["1"]:
        log_file = LOG_DIR / f"{unit_name(job)}.log"
        raise HostError(
            f"the {job} exporter answers but {metric} is {values or 'absent'}: it cannot log "
            f"in as {params['monitor_user']}; {log_file} ends: {log_tail(log_file, 0, 600)}"
        )
    return "ok"


def main() -> dict:
    params = read_params()
    jobs = list(params["exporter_ports"]) + ([BACKUP_JOB] if params["stanza"] else [])
    changed = ["installed"] if install(jobs) else []
    replaced = install_built(params, jobs)
    check_built(params, jobs)
    if BACKUP_JOB not in jobs and retire_backup_metrics(params):
        changed.append("backup metrics removed (no backups)")
    files = write_files(params, jobs) | dict.fromkeys(replaced, True)
    changed += [f"{job}_exporter installed in {BUILT_DIR}" for job in replaced]
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
            job: f"{params['private_address']}:{port}"
            for job, port in params["exporter_ports"].items()
        },  # fmt: skip
        "probe": {job: probe(job, params) for job in jobs},
    }


if __name__ == "__main__":
    main_wrapper(main)
