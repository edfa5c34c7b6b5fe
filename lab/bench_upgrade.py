#!/usr/bin/env python3
"""Benchmark of the blue/green major upgrade, PostgreSQL 15 to 17 (issue 24), against a dump
and restore of the same data, on a lab of its own (mlub: the two stacks of lab/bluegreen.py),
in one run:

- the 15 primary filled by `pgbench -i -s 70` (about 1 GB; pg_database_size reported);
- the floor, with no writes (a dump and restore needs them stopped): `pg_dump -Fc` on the 15
  server, the file copied to the 17 server, `pg_restore -j 2` into an empty database there;
- the upgrade under a light write load (lab/write_load.py's clients through Mastodon's env):
  publish (its restart inside a pause), seed until every table is ready (the initial copy) and
  in sync (lag under 1 MiB), the cut-over: each phase's seconds, the longest write pause a
  client saw, client errors, rows lost; then the ratios of this one run.

Prints the figures and writes them to results/upgrade_timings.json (ignored). Root; about ten
minutes. The lab is removed at the end, also on failure.

    venv/bin/python -m lab.bench_upgrade [--scale S] [--clients N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab import namespaces as lab_hosts
from lab import rootfs
from lab.bench_run import write_figures
from lab.bench_switchover import stack_secrets
from lab.bluegreen import DB, BlueGreen, both_stacks, psql
from lab.stack import ROOT
from lab.write_load import TABLE, WriteLoad

LAB = lab_hosts.Lab(
    prefix="mlub",
    subnet="10.226.0.0/24",
    state_dir=Path("/var/lib/mastodon-lab-upgrade-bench"),
    images={3: rootfs.image_dir()},
)
H1, H2, H3 = (LAB.host(i) for i in (1, 2, 3))
RESULTS = ROOT / "results" / "upgrade_timings.json"
SSH_TIMEOUT = 1800  # seconds for one command on a host (the fill, the dump, the restore)
SYNC_WAIT = 1800  # seconds for the initial copy of ~1 GB to be in sync (at rest: see the docs)
SETTLE = 1  # seconds of load before and after each step that pauses writes
DUMP = "/var/lib/postgresql/bench-upgrade.dump"
FLOOR_DB = "restore_floor"


def on_host(host: lab_hosts.LabHost, command: str, stdin=None) -> tuple[float, str]:
    """`command` run as root on `host` (failing loudly): its seconds (ssh included) and its
    output; `stdin` a pipe to read, or nothing."""
    start = time.monotonic()
    result = subprocess.run(
        LAB.ssh_command(host.address, command), stdin=stdin, capture_output=True,
        timeout=SSH_TIMEOUT,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"{command!r} on {host.name} failed: {result.stderr.decode()}")
    return round(time.monotonic() - start, 2), result.stdout.decode().strip()


def as_postgres(version: int, tool: str, args: str) -> str:
    return f"cd /tmp && runuser -u postgres -- /usr/lib/postgresql/{version}/bin/{tool} {args}"


def fill(scale: int) -> dict:
    """pgbench's tables at `scale` on the 15 primary; pgbench_history (empty, no primary key)
    gets a replica identity, since publish refuses a table without one."""
    took, _ = on_host(H1, as_postgres(15, "pgbench", f"-i -q -s {scale} {DB}"))
    psql(LAB, H1, 15, "ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
    size = int(psql(LAB, H1, 15, f"SELECT pg_database_size('{DB}')"))
    return {"fill_s": took, "database_mb": round(size / 2**20)}


def dump_and_restore() -> dict:
    """The floor: pg_dump -Fc on the 15 server, the file copied to the 17 server over ssh,
    pg_restore -j 2 into an empty database there (checked, then dropped)."""
    figures = {"dump_s": on_host(H1, as_postgres(15, "pg_dump", f"-Fc -d {DB} -f {DUMP}"))[0]}
    figures["dump_file_mb"] = round(int(on_host(H1, f"stat -c %s {DUMP}")[1]) / 2**20)
    start = time.monotonic()
    with subprocess.Popen(LAB.ssh_command(H1.address, f"cat {DUMP}"),
                          stdout=subprocess.PIPE) as sender:  # fmt: skip
        on_host(H3, f"install -m 600 -o postgres /dev/null {DUMP} && cat > {DUMP}", sender.stdout)
        if sender.wait(timeout=SSH_TIMEOUT) != 0:
            raise AssertionError(f"reading {DUMP} on {H1.name} failed")
    figures["copy_file_s"] = round(time.monotonic() - start, 2)
    on_host(H3, as_postgres(17, "createdb", FLOOR_DB))
    restore = as_postgres(17, "pg_restore", f"-j 2 --exit-on-error -d {FLOOR_DB} {DUMP}")
    figures["restore_s"] = on_host(H3, restore)[0]
    count = as_postgres(
        17, "psql", f"-XAt -d {FLOOR_DB} -c 'SELECT count(*) FROM pgbench_accounts'"
    )
    figures["restored_accounts"] = int(on_host(H3, count)[1])
    on_host(H3, as_postgres(17, "dropdb", FLOOR_DB))
    for host in (H1, H3):
        on_host(host, f"rm -f {DUMP}")
    figures["dump_restore_s"] = round(
        figures["dump_s"] + figures["copy_file_s"] + figures["restore_s"], 2
    )
    return figures


def publish(upgrade: BlueGreen, env: dict, clients: int) -> dict:
    """publish on the 15 primary under the load (wal_level=logical: a restart inside a pause
    of its pools), then on the 17 server for the way back."""
    with WriteLoad(env, clients) as load:
        time.sleep(SETTLE)
        start = time.monotonic()
        published = upgrade.publish(H1.name, H3.name)
        took = round(time.monotonic() - start, 2)
        time.sleep(SETTLE)
    upgrade.publish(H3.name, H1.name)
    return {
        "publish_s": took, "publish_restart_s": published["restart_s"],
        "publish_longest_write_pause_s": load.longest_pause_s,
        "publish_client_errors": len(load.errors), "scram": published["db_user_scram"],
    }  # fmt: skip


def seed_and_cut_over(upgrade: BlueGreen, env: dict, clients: int, scram: str) -> dict:
    """seed the 17 server under the load, wait until in sync, cut over; the rows every client
    committed checked on the 17 server afterwards."""
    psql(LAB, H1, 15, f"TRUNCATE {TABLE}")  # the publish load's rows: the load counts anew
    with WriteLoad(env, clients) as load:
        start = time.monotonic()
        upgrade.upgrade(H3.name, "seed", peer=H1.name, db_user_scram=scram)
        seeded = time.monotonic() - start
        synced = upgrade.sync_times(H3.name, H1.name, SYNC_WAIT)
        views = upgrade.upgrade(H3.name, "refresh_views")
        time.sleep(SETTLE)
        cut = upgrade.cut_over(H1.name, H3.name, (H1.name, H2.name))
        time.sleep(SETTLE)
    rows = psql(LAB, H3, 17, f"SELECT client || ',' || n FROM {TABLE}").splitlines()
    on_new = {tuple(map(int, row.split(","))) for row in rows}
    return {
        "seed_step_s": round(seeded, 2),
        "initial_copy_s": round(seeded + synced["ready_s"], 2),
        "in_sync_s": round(seeded + synced["in_sync_s"], 2),
        "lag_bytes_in_sync": synced["lag_bytes"],
        "views_refreshed": len(views["refreshed"]),
        **{f"cutover_{key}": value for key, value in cut.items()},
        "cutover_longest_write_pause_s": load.longest_pause_s,
        "cutover_client_errors": len(load.errors),
        "rows_committed": len(load.rows),
        "rows_lost": len(load.rows - on_new),
    }


def accounts(host: lab_hosts.LabHost, version: int) -> str:
    return psql(LAB, host, version, "SELECT count(*) || ' ' || sum(abalance) FROM pgbench_accounts")


def measure(figures: dict, workdir: Path, scale: int, clients: int) -> None:
    start = time.monotonic()
    stacks, key = both_stacks(LAB, stack_secrets(LAB), workdir)
    figures["stacks_up_s"] = round(time.monotonic() - start, 2)
    figures |= fill(scale)
    figures |= dump_and_restore()
    env = stacks["old"]["outputs"]["mastodon_env"]
    upgrade = BlueGreen(stacks, key)
    try:
        start = time.monotonic()
        published = publish(upgrade, env, clients)
        figures |= {k: v for k, v in published.items() if k != "scram"}
        figures |= seed_and_cut_over(upgrade, env, clients, published["scram"])
        figures["upgrade_total_s"] = round(time.monotonic() - start, 2)
    finally:
        upgrade.close()
    figures["accounts_same_on_17"] = accounts(H3, 17) == accounts(H1, 15)
    figures |= ratios(figures)


def ratios(figures: dict) -> dict:
    """This run's comparisons with the dump and restore (the downtime it costs)."""
    floor = figures["dump_restore_s"]
    pause = max(figures["publish_longest_write_pause_s"], figures["cutover_longest_write_pause_s"])
    return {
        "longest_write_pause_s": pause,
        "ratio_longest_pause_to_dump_restore": round(pause / floor, 3),
        "ratio_initial_copy_to_dump_restore": round(figures["initial_copy_s"] / floor, 2),
        "ratio_upgrade_total_to_dump_restore": round(figures["upgrade_total_s"] / floor, 2),
        "copy_mb_per_s": round(figures["database_mb"] / figures["initial_copy_s"], 1),
        "dump_restore_mb_per_s": round(figures["database_mb"] / floor, 1),
    }


def wrong(figures: dict) -> list[str]:
    """What a run must not show, whatever the load: lost rows, client errors, data that differs."""
    counted = ("publish_client_errors", "cutover_client_errors", "rows_lost")
    problems = [f"{key}: {figures[key]}" for key in counted if figures.get(key)]
    if figures.get("restored_accounts") != figures["pgbench_scale"] * 100_000:
        problems.append(f"restored_accounts: {figures.get('restored_accounts')}")
    if not figures.get("accounts_same_on_17"):
        problems.append("pgbench_accounts differ between 15 and 17")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70: about 1 GB)")
    parser.add_argument("--clients", type=int, default=2, help="writing clients (default 2)")
    args = parser.parse_args(argv)
    if not rootfs.built(LAB.images[3]):
        print(f"error: the Debian 13 image {LAB.images[3]} is not built: run `make rootfs`",
              file=sys.stderr)  # fmt: skip
        return 1
    started, status = time.monotonic(), 0
    figures = {"load_average_start": os.getloadavg()[0], "pgbench_scale": args.scale}
    lab_hosts.down(LAB)
    try:
        lab_hosts.up(LAB, 3)
        with tempfile.TemporaryDirectory(prefix="mlub-bench-") as workdir:
            measure(figures, Path(workdir), args.scale, args.clients)
        problems = wrong(figures)
        if problems:
            raise AssertionError("; ".join(problems))
    except Exception as exc:  # noqa: BLE001 - reported with what was measured before it
        figures["failed"] = f"{type(exc).__name__}: {exc}"
        print(f"error: {figures['failed']}", file=sys.stderr)
        status = 1
    finally:
        lab_hosts.down(LAB)
    figures |= {"load_average_end": os.getloadavg()[0],
                "benchmark_s": round(time.monotonic() - started)}  # fmt: skip
    write_figures(RESULTS, figures)
    return status


if __name__ == "__main__":
    sys.exit(main())
