"""The exporters on a lab of their own, through the engine: `pulumi up` of a hosts-mode stack
(primary + 1 replica, pools of 15, backups into the lab's S3 store) with monitoringSources runs
the monitor and exporters steps (host/exporters.py), the program shipping the upstream builds
from where `make exporters` left them. Proven here: each host runs them from its own
/usr/local/bin; every target of the `prometheus_targets` output answers with the metrics the
rules read, on the private address only; the monitor's password is on no command line and in
no file wider than 0600; Debian's Prometheus loads the stack's `alert_rules` and its targets,
reports every target up, and PgbouncerClientWaitLong fires within a bound while 20 clients want
a pool of 15, and clears once they leave; a backup's completion reaches Prometheus
(host/backup_metrics.py) and, older than a lowered threshold, fires BackupFullTooOld. Figures:
results/exporters.json."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import backup_metrics
import pytest
import yaml
from labkit import applied, new_secrets, own_lab, wait_until, write_figures
from promlab import (
    BUILT,
    alert_state,
    api,
    built_exporters,
    get,
    monitored_with_backups,
    query,
    running_prometheus,
    samples,
    scrape_url,
)

from lab import namespaces as lab_hosts
from lab.host_files import private_source
from lab.s3 import LabS3
from lab.stack import LabStack
from mastodon_data.monitoring import builds
from tests.fixtures import COMMAND

pytestmark = [pytest.mark.lab, pytest.mark.engine]
EXPORTERS_LAB = lab_hosts.Lab(
    prefix="mlx", subnet="10.236.0.0/24", state_dir=Path("/var/lib/mastodon-lab-exporters")
)
PRIMARY, REPLICA = "10.236.0.11", "10.236.0.12"
# 1 Puma process x 5 threads + 5 Sidekiq threads + 5 streaming connections = 15 per pool.
THREADS = {"pumaProcesses": 1, "pumaThreads": 5, "sidekiqThreads": 5, "streamingDbPool": 5}
POOL_SIZE = 15
PROMETHEUS_PORT = 19236  # this test's Prometheus, on 127.0.0.1
# The lab's S3 store (lab/s3.py) for the backups, on the operator's address of this lab.
S3_DIR, S3_PORTS = Path("/var/lib/mastodon-lab-exporters-s3"), (19020, 19021)
BUCKET, STANZA = "mlx-pg-backups", "mastodon"
FULL_BACKUP_AGE = 60  # BackupFullTooOld's threshold in this test's Prometheus (192 h shipped)
FIGURES: dict[str, float] = {}
# The metrics the rules read (tests/unit/test_alert_rules.py), by job, on every server.
METRICS = {
    "postgres": {"pg_up", "pg_stat_activity_count", "pg_settings_max_connections",
                 "pg_stat_archiver_failed_count", "pg_replica_in_recovery",
                 "pg_replica_streaming", "pg_archive_ready_segments"},
    "pgbouncer": {"pgbouncer_up", "pgbouncer_pools_client_waiting_connections",
                  "pgbouncer_pools_client_maxwait_seconds", "pgbouncer_process_open_fds",
                  "pgbouncer_process_max_fds"},
    "node": {"node_filesystem_avail_bytes", "node_filesystem_size_bytes",
             "pgbackrest_info_success", "pgbackrest_info_timestamp_seconds",
             "pgbackrest_stanza_status"},
    "ssl": {"ssl_cert_not_after", "ssl_probe_success"},
}  # fmt: skip
# And by role: the primary's view of its replica, the replica's own lag.
ROLE_METRICS = {
    "primary": {"pg_stat_replication_pg_wal_lsn_diff", "pg_replication_slots_pg_wal_lsn_diff"},
    "replica": {"pg_replica_lag_seconds"},
}
FIRE_BOUND = 75  # seconds: maxwait passes 2 s, the rule's `for: 30s`, scrapes and evaluations
CLEAR_BOUND = 30


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    store = LabS3(EXPORTERS_LAB.operator_address, S3_DIR, *S3_PORTS)
    with built_exporters(), own_lab(EXPORTERS_LAB, 2):
        try:
            store.start()
            store.make_bucket(BUCKET)
            workdir = tmp_path_factory.mktemp("exporters")
            settings, added_secrets = monitored_with_backups(EXPORTERS_LAB, store, BUCKET)
            stack_secrets = new_secrets(EXPORTERS_LAB) | added_secrets
            stack = LabStack("exporterstest", workdir / "stack")
            stack.prepare()
            config = lab_hosts.stack_config(EXPORTERS_LAB, 1, 2) | THREADS | settings
            config["backupArchiveTimeout"] = "10s"
            outputs = applied(stack, config, stack_secrets)
            yield {"stack": stack, "outputs": outputs, "secrets": stack_secrets, "dir": workdir}
        finally:
            store.stop()
            write_figures("exporters", FIGURES)


def test_every_target_answers_with_the_metrics_the_rules_read(monitored):
    groups = monitored["outputs"]["prometheus_targets"]
    assert sorted({g["labels"]["job"] for g in groups}) == ["node", "pgbouncer", "postgres", "ssl"]
    assert len(groups) == 2 * 5  # per server: postgres, node, pgbouncer, ssl x (5432, 6432)
    for group in groups:
        job, role = group["labels"]["job"], group["labels"]["role"]
        found = samples(get(scrape_url(group)))
        wanted = METRICS[job] | (ROLE_METRICS[role] if job == "postgres" else set())
        assert wanted - set(found) == set(), (group, sorted(found)[:50])
        up = {"postgres": "pg_up", "pgbouncer": "pgbouncer_up", "ssl": "ssl_probe_success"}
        if job in up:
            assert [line.split()[-1] for line in found[up[job]]] == ["1"], group
    max_fds = samples(get(f"http://{PRIMARY}:9127/metrics"))["pgbouncer_process_max_fds"]
    assert [float(line.split()[-1]) for line in max_fds] == [4096.0]  # pgbouncerOpenFiles


def test_the_exporters_listen_on_the_private_address_only(monitored):
    for port in (9187, 9100, 9127, 9219):
        argv = EXPORTERS_LAB.ssh_command(PRIMARY, f"ss -Hltn 'sport = :{port}'")
        listening = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
        assert [line.split()[3] for line in listening.splitlines()] == [f"{PRIMARY}:{port}"]


def test_each_host_runs_the_shipped_builds_from_its_own_usr_local_bin(monitored):
    """The program's copies land in each lab host's own /usr/local/bin (a directory in its
    state directory, lab/host_files.py), never in this machine's."""
    for index, address in ((1, PRIMARY), (2, REPLICA)):
        own = private_source(EXPORTERS_LAB.host(index).state_dir, "/usr/local/bin")
        for name in BUILT:
            build = builds.binary_path(builds.home(""), name).read_bytes()
            argv = EXPORTERS_LAB.ssh_command(address, f"sha256sum /usr/local/bin/{name}")
            shown = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
            assert shown.split()[:1] == [hashlib.sha256(build).hexdigest()], (address, name)
            assert (own / name).read_bytes() == build


def test_the_password_is_on_no_command_line_and_in_no_wider_file(monitored):
    password = monitored["secrets"]["monitorPassword"]
    commands = [p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if readable(p)]
    assert not [c for c in commands if password.encode() in c]
    # The host's own configuration, run and log directories (lab/host_files.py).
    own = [
        d for d in EXPORTERS_LAB.host(1).state_dir.iterdir() if d.name.startswith(("etc-", "var-"))
    ]
    holders = [
        path for directory in own for path in directory.rglob("*")
        if path.is_file() and not path.is_symlink() and password in read_text(path)
    ]  # fmt: skip
    assert [p.name for p in holders] == ["monitor.pgpass"]
    assert holders[0].stat().st_mode & 0o777 == 0o600 and holders[0].owner() == "postgres"


def readable(path: Path) -> bool:
    try:
        path.read_bytes()
    except OSError:
        return False
    return True


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def prometheus(monitored):
    """Debian's Prometheus with the stack's rules and targets, scraping every second."""
    outputs = monitored["outputs"]
    rules = lowered_rules(outputs["alert_rules"])
    with running_prometheus(
        monitored["dir"] / "prometheus", rules, outputs["prometheus_targets"], PROMETHEUS_PORT
    ) as url:
        yield url


def lowered_rules(shipped: str) -> str:
    """The shipped rules with BackupFullTooOld's threshold (192 h) lowered to FULL_BACKUP_AGE:
    the only change."""
    threshold = f"> {192 * 3600}\n"
    assert shipped.count(threshold) == 1, "BackupFullTooOld's threshold, and only it"
    return shipped.replace(threshold, f"> {FULL_BACKUP_AGE}\n")


def test_prometheus_loads_the_rules_and_finds_every_target_up(monitored, prometheus):
    groups = api(prometheus, "rules")["groups"]
    shipped = yaml.safe_load(monitored["outputs"]["alert_rules"])["groups"]
    assert sorted(g["name"] for g in groups) == sorted(g["name"] for g in shipped)
    assert sum(len(g["rules"]) for g in groups) == sum(len(g["rules"]) for g in shipped)

    def all_up():
        rules = [r for g in api(prometheus, "rules")["groups"] for r in g["rules"]]
        assert {r["health"] for r in rules} == {"ok"}  # each evaluated without error
        targets = api(prometheus, "targets")["activeTargets"]
        assert len(targets) == len(monitored["outputs"]["prometheus_targets"])
        assert {(t["labels"]["job"], t["health"]) for t in targets} == {
            (job, "up") for job in METRICS
        }
        return True

    print(f"every target up after {wait_until(all_up, 30, 'every target up'):.1f} s")


def test_clients_beyond_the_pool_fire_the_wait_alert_and_it_clears(monitored, prometheus):
    """20 clients each hold a server connection of a pool of 15 for 60 s: 5 wait."""
    env = {**os.environ, "PGPASSWORD": monitored["secrets"]["dbPassword"],
           "PGCONNECT_TIMEOUT": "10"}  # fmt: skip
    conninfo = f"host={PRIMARY} port=6432 dbname=mastodon_production user=mastodon sslmode=require"
    assert alert_state(prometheus, "PgbouncerClientWaitLong") is None
    clients = [
        subprocess.Popen(["psql", "-X", "-q", "-c", "SELECT pg_sleep(60)", conninfo], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(POOL_SIZE + 5)
    ]  # fmt: skip
    try:
        fired = wait_until(
            lambda: alert_state(prometheus, "PgbouncerClientWaitLong") == "firing",
            FIRE_BOUND, "PgbouncerClientWaitLong firing",
        )  # fmt: skip
    finally:
        for client in clients:
            client.kill()
        for client in clients:
            client.wait(timeout=30)
    cleared = wait_until(
        lambda: alert_state(prometheus, "PgbouncerClientWaitLong") is None,
        CLEAR_BOUND, "PgbouncerClientWaitLong cleared",
    )  # fmt: skip
    print(f"PgbouncerClientWaitLong: fired {fired:.1f} s after the burst, cleared {cleared:.1f} s")


def tool(stack: LabStack, *args: str) -> dict:
    """`mastodon-data <args>` on the stack, as an operator runs it; its JSON report."""
    result = subprocess.run(
        [COMMAND, *args[:1], "--stack", stack.name, "--cwd", str(stack.workdir), *args[1:]],
        capture_output=True, text=True, timeout=900, env=stack.env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_backups_completion_reaches_prometheus_and_ages_into_backup_full_too_old(
    monitored, prometheus
):
    """Both servers report the backup's own stop time, for each type it counts as (a full
    counts as diff and incr too); older than FULL_BACKUP_AGE, BackupFullTooOld fires."""
    status = f'pgbackrest_stanza_status{{stanza="{STANZA}"}}'
    no_backup_yet = {"mlx-h1": 2.0, "mlx-h2": 2.0}  # pgBackRest's "no valid backups"
    wait_until(lambda: query(prometheus, status) == no_backup_yet, 30, "the stanza's status")
    report = tool(monitored["stack"], "backups", "now", "--type", "full")
    stopped = float(report["last_backup"]["stopped"])
    assert report["last_backup"]["type"] == "full"
    completion = "pgbackrest_backup_last_completion_timestamp_seconds"

    def reported() -> bool:
        for kind in ("full", "diff", "incr"):
            series = f'{completion}{{stanza="{STANZA}",backup_type="{kind}"}}'
            assert query(prometheus, series) == {"mlx-h1": stopped, "mlx-h2": stopped}
        assert query(prometheus, status) == {"mlx-h1": 0.0, "mlx-h2": 0.0}
        return True

    seen = wait_until(reported, backup_metrics.REPEAT + 30, "the backup in Prometheus")
    ages = query(prometheus, f'time() - {completion}{{backup_type="full"}}')
    assert sorted(ages) == ["mlx-h1", "mlx-h2"] and all(0 <= a < 300 for a in ages.values())
    if time.time() - stopped < FULL_BACKUP_AGE - 5:  # younger than the threshold: quiet
        assert alert_state(prometheus, "BackupFullTooOld") is None
    fired = wait_until(
        lambda: alert_state(prometheus, "BackupFullTooOld") == "firing",
        FULL_BACKUP_AGE + 60, "BackupFullTooOld firing",
    )  # fmt: skip
    age = time.time() - stopped
    assert age > FULL_BACKUP_AGE
    FIGURES.update(backup_seen_after_s=round(seen, 1), backup_full_too_old_at_age_s=round(age, 1))
    print(
        f"the backup in Prometheus {seen:.1f} s after `backups now` returned; BackupFullTooOld "
        f"fired {fired:.1f} s later, at an age of {age:.1f} s (threshold {FULL_BACKUP_AGE} s)"
    )


def test_after_a_power_cut_the_labs_boot_starts_the_exporters_again(monitored):
    """Every process of the replica's host killed (the machine restarted): `up` of the lab
    starts them as systemd would, and the replica's exporters answer again."""
    replica = EXPORTERS_LAB.host(2)
    out = lab_hosts.run(["ip", "netns", "pids", replica.netns], check=False).stdout
    for pid in map(int, out.split()):
        os.kill(pid, 9)
    lab_hosts.up(EXPORTERS_LAB, 2)
    groups = [g for g in monitored["outputs"]["prometheus_targets"]
              if g["labels"]["role"] == "replica"]  # fmt: skip

    def answering():
        for group in groups:
            try:
                found = samples(get(scrape_url(group)))
            except OSError as exc:
                raise AssertionError(f"{scrape_url(group)}: {exc}") from None
            assert METRICS[group["labels"]["job"]] - set(found) == set()
        assert samples(get(f"http://{REPLICA}:9187/metrics"))["pg_up"] == ["pg_up 1"]
        return True

    print(f"the replica's exporters answer {wait_until(answering, 60, 'exporters back'):.1f} s "
          "after its boot")  # fmt: skip
