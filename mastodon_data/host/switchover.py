#!/usr/bin/env python3
"""One step of a planned switchover on this server (`mastodon-data switchover`); the command
runs them in order across the servers. Each is idempotent, so a re-run finishes what an
interrupted one left.

    pause     PgBouncer: PAUSE the pools in `databases` (in-flight transactions finish, new
              ones wait; bounded by pause_wait)
    fence     the old primary: its pools paused, then a clean shutdown (its last WAL reaches
              the connected replicas); reports the shutdown checkpoint's location
    take_over the target: waits (bounded) until it has replayed past that location, then
              pg_promote; reports its server certificate, which the pools trust until its
              primary step issues one. Not caught up in time: reports it, promotes nothing.
              (promote.py then clears its upstream settings, after the pause)
    unfence   the old primary, when the target did not catch up: started again
    repoint   PgBouncer: DB_NAME to the new primary (a RELOAD), then RESUME `databases`
    demote    the old primary, cleanly shut down at a location the new primary has: started
              as a standby (standby.signal; the stack's replica step points it at the new
              primary); otherwise reports that it needs pg_rewind (the replica step's reseed)
    resume    PgBouncer: RESUME `databases` (a database not paused is fine)

stdin (JSON): SwitchoverParams (mastodon_data/host_params.py). With --serve, one step per line
of stdin, each answered by a line of stdout (its report, or {"error": ...}), until stdin ends:
the command keeps one running on each server for the whole switchover, so the pause costs the
steps' own work, not an ssh session and two Python starts per step.
"""

from __future__ import annotations

import json
import re
import sys
import time

from common import POLL, Cluster, HostError, log, main_wrapper, read_params, run
from pooler import AS_POSTGRES, INI, LOGFILE, SERVER_CA
from promote import PROMOTE_WAIT

SOCKET_DIR = "/var/run/postgresql"  # PgBouncer's unix_socket_dir (pooler.settings)
ADMIN_WAIT = 10  # seconds for an admin command other than PAUSE


def psql(cluster: Cluster, *args: str, wait: float = ADMIN_WAIT):
    """psql as postgres through setpriv: no PAM session as runuser's (the pause is made of
    these calls)."""
    argv = [*AS_POSTGRES.split(), str(cluster.bindir / "psql"), "-X", "-A", "-t", *args]
    return run(argv, check=False, timeout=wait)


def sql(cluster: Cluster, statement: str) -> str:
    result = psql(cluster, "-p", str(cluster.port), "-d", "postgres", "-c", statement)
    if result.returncode != 0:
        raise HostError(f"{statement} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def admin(params: dict, command: str, wait: float = ADMIN_WAIT) -> str:
    """A command on PgBouncer's admin console: user pgbouncer over the Unix socket, as the
    user PgBouncer runs as (it lets that one in without a password)."""
    cluster = Cluster(params["postgres_version"])
    result = psql(
        cluster, "-h", SOCKET_DIR, "-p", str(params["pgbouncer_port"]), "-U", "pgbouncer",
        "-d", "pgbouncer", "-c", command, wait=wait,
    )  # fmt: skip
    if result.returncode != 0:
        raise HostError(f"PgBouncer's {command} failed: {result.stderr.strip()}; see {LOGFILE}")
    return result.stdout.strip()


def pause(params: dict) -> list[str]:
    """PAUSE each database; one that does not finish within pause_wait (a transaction that
    does not end) is resumed again and the step fails, so nothing stays paused."""
    done = []
    for database in params["databases"]:
        try:
            admin(params, f"PAUSE {database}", wait=params["pause_wait"])
        except HostError as exc:
            if "already" not in str(exc):
                resume(params)
                raise HostError(
                    f"{exc} (transactions still running after {params['pause_wait']} s?); "
                    "the pools were resumed"
                ) from None
        done.append(database)
    return done


def resume(params: dict) -> list[str]:
    done = []
    for database in params["databases"]:
        try:
            admin(params, f"RESUME {database}")
        except HostError as exc:
            if "not paused" not in str(exc):
                raise
        done.append(database)
    return done


def controldata(cluster: Cluster) -> dict[str, str]:
    out = run([str(cluster.bindir / "pg_controldata"), str(cluster.datadir)], env={"LC_ALL": "C"})
    return dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in out.stdout.splitlines())
    )


def lsn_value(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def fence(cluster: Cluster, params: dict) -> dict:
    """Pauses this server's pools, then stops the old primary cleanly: a fast shutdown ends
    transactions, writes the shutdown checkpoint and lets the WAL senders send everything
    before they exit."""
    pause(params)
    if (cluster.datadir / "postmaster.pid").exists():
        if sql(cluster, "SELECT pg_is_in_recovery()") == "t":
            return {"state": "standby"}  # demoted by an earlier run
        log("stopping the old primary (fast, clean)")
        run(["pg_ctlcluster", str(cluster.version), cluster.name, "stop", "-m", "fast"])
    control = controldata(cluster)
    state = control["Database cluster state"]
    if state != "shut down":
        raise HostError(f"the old primary's state is {state!r}, not a clean shutdown")
    return {"state": state, "checkpoint": control["Latest checkpoint location"]}


def take_over(cluster: Cluster, params: dict) -> dict:
    """Promotes this replica once it replayed past the old primary's shutdown checkpoint."""
    certificate = (cluster.confdir / "server.crt").read_text()
    if sql(cluster, "SELECT pg_is_in_recovery()") == "f":  # promoted by an earlier run
        return {"caught_up": True, "replayed": "", "server_cert": certificate}
    target = lsn_value(params["checkpoint"])
    start = time.monotonic()
    while True:
        replayed = sql(cluster, "SELECT pg_last_wal_replay_lsn()")
        if replayed and lsn_value(replayed) > target:
            break
        if time.monotonic() - start > params["catch_up_wait"]:
            log(
                f"replayed up to {replayed or 'nothing'}, not past the old primary's last "
                f"checkpoint {params['checkpoint']}, within {params['catch_up_wait']} s"
            )
            return {"caught_up": False, "replayed": replayed}
        time.sleep(POLL / 10)
    caught_up = round(time.monotonic() - start, 3)
    if sql(cluster, f"SELECT pg_promote(true, {PROMOTE_WAIT})") != "t":
        raise HostError(f"pg_promote did not finish within {PROMOTE_WAIT} s; see the log")
    return {
        "caught_up": True,
        "replayed": replayed,
        "catch_up_s": caught_up,
        "server_cert": certificate,
    }


def repoint(params: dict) -> str:
    """DB_NAME's server becomes the new primary, whose certificate PgBouncer trusts from now."""
    text = INI.read_text()
    line = re.compile(rf"^({re.escape(params['db_name'])} = host=)\S+", re.M)
    new_text, found = line.subn(rf"\g<1>{params['new_primary_address']}", text, count=1)
    if not found:
        raise HostError(f"{INI} has no database {params['db_name']}: run the pooler step first")
    trusted = SERVER_CA.read_text()
    certificate = params["new_primary_cert"].strip() + "\n"
    changed = new_text != text or certificate not in trusted
    if changed:
        if certificate not in trusted:
            SERVER_CA.write_text(trusted.rstrip("\n") + "\n" + certificate)
        INI.write_text(new_text)
        admin(params, "RELOAD")  # the console's, done when it answers (a SIGHUP is not)
    resume(params)
    return "repointed" if changed else "unchanged"


def demote(cluster: Cluster, params: dict) -> dict:
    """The old primary becomes a standby when its data ends where the new primary's timeline
    began (a clean shutdown the target replayed): no rewind. Else the caller rewinds it."""
    if (cluster.datadir / "postmaster.pid").exists():
        standby = sql(cluster, "SELECT pg_is_in_recovery()") == "t"
        return {"rewind": not standby, "state": "standby" if standby else "running as primary"}
    control = controldata(cluster)
    clean = control["Database cluster state"] == "shut down"
    replayed = lsn_value(params["replayed"]) if params["replayed"] else -1
    if not clean or lsn_value(control["Latest checkpoint location"]) >= replayed:
        return {"rewind": True, "state": control["Database cluster state"]}
    signal_file = cluster.datadir / "standby.signal"
    signal_file.touch(mode=0o600)
    run(["chown", "postgres:postgres", str(signal_file)])
    cluster.start()
    cluster.wait_ready()
    return {"rewind": False, "state": "standby"}


def step(params: dict) -> dict:
    cluster = Cluster(params["postgres_version"], params["port"])
    action = params["action"]
    if action == "pause":
        return {"paused": pause(params)}
    if action == "resume":
        return {"resumed": resume(params)}
    if action == "repoint":
        return {"pool": repoint(params), "resumed": params["databases"]}
    if action == "fence":
        return fence(cluster, params)
    if action == "take_over":
        return take_over(cluster, params)
    if action == "unfence":
        started = cluster.start()
        if started:
            cluster.wait_ready()
        return {"started": started}
    if action == "demote":
        report = demote(cluster, params)
        if not report["rewind"]:
            report["resumed"] = resume(params)
        return report
    raise HostError(f"unknown switchover action {action!r}")


def serve(answer=step) -> None:
    """--serve: each line of stdin a step's parameters, each answered by `answer`'s report."""
    print(json.dumps({"ready": True}), flush=True)
    for line in iter(sys.stdin.readline, ""):
        try:
            report = answer(read_params(line))
        except HostError as exc:
            report = {"error": str(exc)}
        print(json.dumps(report, sort_keys=True), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        main_wrapper(lambda: step(read_params()))
