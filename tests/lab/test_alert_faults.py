"""Issue 23's faults against a real Prometheus, on a lab of their own (mlaf) through the engine:
a hosts-mode stack (primary + 1 replica of three hosts, backups into the lab's S3 store,
monitoringSources set), Debian's Prometheus over its `alert_rules` and `prometheus_targets`
exactly as output (no rule changed: the archive wait is the stack's own setting), scraping and
evaluating every second. In sequence: the exporters' memory and CPU on the replica at rest; the
replica's cable cut (the alerts of a lost replica fire, and clear once it is back); the store
unreachable from the primary (PostgresArchiveFailing and PostgresArchiveBehind fire, and clear);
a replica added and removed with `pulumi up`, the targets rewritten from the output as an
operator's pipeline does (Prometheus finds the new replica's exporters up, then no longer
scrapes them). Figures: results/alert_faults.json."""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from labkit import applied, new_secrets, own_lab, wait_until, write_figures
from promlab import (
    alert_state,
    api,
    built_exporters,
    query,
    reload,
    running_prometheus,
    write_targets,
)

from lab import namespaces as lab_hosts
from lab.s3 import LabS3
from lab.stack import LabStack

pytestmark = [pytest.mark.lab, pytest.mark.engine]
FAULTS_LAB = lab_hosts.Lab(
    prefix="mlaf", subnet="10.231.0.0/24", state_dir=Path("/var/lib/mastodon-lab-alert-faults")
)
PRIMARY, REPLICA, SPARE = (FAULTS_LAB.host(i) for i in (1, 2, 3))
PROMETHEUS_PORT = 19231  # this test's Prometheus, on 127.0.0.1
S3_DIR, S3_PORTS = Path("/var/lib/mastodon-lab-alert-faults-s3"), (19030, 19031)  # moto, TLS
BUCKET = "mlaf-pg-backups"
ARCHIVE_WAIT = 30  # alertArchiveWaitSeconds (300 by default): PostgresArchiveBehind's threshold
PSQL = "runuser -u postgres -- psql -X -A -t -v ON_ERROR_STOP=1 -d mastodon_production"
# The exporters of a server, by the program their process runs (host/exporters.py).
EXPORTER_BINARIES = {
    "/usr/bin/prometheus-postgres-exporter": "postgres",
    "/usr/bin/prometheus-node-exporter": "node",
    "/usr/local/bin/pgbouncer_exporter": "pgbouncer",
    "/usr/local/bin/ssl_exporter": "ssl",
}
AT_REST = 60  # seconds of CPU time measured on the replica
# A lost replica: its targets fail at the next scrape (1 s) and the primary's walsender lets
# go within replicationTimeout (10 s); the rules' `for: 1m`. Measured at rest: see the docs.
CUT_FIRE_BOUND, CUT_CLEAR_BOUND = 150, 60
LOST_REPLICA = {("PostgresDown", REPLICA.name), ("PgbouncerDown", REPLICA.name),
                ("PostgresReplicasMissing", f"{PRIMARY.address}:9187")}  # fmt: skip
# archive-push gives up on the store (its io-timeout), then the rule's `for: 2m`.
ARCHIVE_FIRE_BOUND, ARCHIVE_CLEAR_BOUND = 420, 180
TARGETS_BOUND = 60  # file_sd is watched: a rewritten file is read within seconds
FIGURES: dict[str, float] = {}


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    store = LabS3(FAULTS_LAB.operator_address, S3_DIR, *S3_PORTS)
    with built_exporters(), own_lab(FAULTS_LAB, 3):
        try:
            store.start()
            store.make_bucket(BUCKET)
            workdir = tmp_path_factory.mktemp("alert-faults")
            stack_secrets = new_secrets(FAULTS_LAB) | {
                "monitorPassword": secrets.token_urlsafe(24),
                "backupCipherPassphrase": secrets.token_urlsafe(32),
                "backupSecretAccessKey": secrets.token_urlsafe(30),
            }
            stack = LabStack("alertfaults", workdir / "stack")
            stack.prepare()
            settings = {
                "monitoringSources": [f"{FAULTS_LAB.operator_address}/32"],
                "backups": True, "backupBucket": BUCKET, "backupEndpoint": store.endpoint,
                "backupAccessKeyId": "mlaf-lab-key", "backupCaCert": store.ca_cert.read_text(),
                "alertArchiveWaitSeconds": ARCHIVE_WAIT,
            }  # fmt: skip

            def up(replicas: int) -> dict:
                config = lab_hosts.stack_config(FAULTS_LAB, replicas, 3) | settings
                return applied(stack, config, stack_secrets)

            outputs = up(1)
            prometheus_dir = workdir / "prometheus"
            with running_prometheus(
                prometheus_dir, outputs["alert_rules"], outputs["prometheus_targets"],
                PROMETHEUS_PORT,
            ) as prometheus:  # fmt: skip
                wait_until(lambda: every_target_up(prometheus, outputs), 60, "every target up")
                yield {"up": up, "prometheus": prometheus, "dir": prometheus_dir}
        finally:
            store.stop()
            write_figures("alert_faults", FIGURES)


def every_target_up(prometheus: str, outputs: dict) -> bool:
    targets = api(prometheus, "targets")["activeTargets"]
    assert len(targets) == len(outputs["prometheus_targets"])
    assert {t["health"] for t in targets} == {"up"}
    return True


def firing(prometheus: str) -> set[tuple[str, str]]:
    """(alert, server) of every firing alert; its instance for a rule that aggregates by it."""
    alerts = [a["labels"] for a in api(prometheus, "alerts")["alerts"] if a["state"] == "firing"]
    return {(a["alertname"], a.get("server", a.get("instance"))) for a in alerts}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise AssertionError(f"no Pss in /proc/{pid}/smaps_rollup")


def exporter_pids(host: lab_hosts.LabHost) -> dict[str, int]:
    """job -> the pid of its exporter among the host's processes (its network namespace)."""
    out = lab_hosts.run(["ip", "netns", "pids", host.netns]).stdout
    found = {}
    for pid in map(int, out.split()):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        job = EXPORTER_BINARIES.get(exe) or (
            "pgbackrest" if b"backup_metrics.py" in cmdline else ""
        )
        if job:
            assert job not in found, f"two {job} exporters on {host.name}"
            found[job] = pid
    return found


def test_the_exporters_on_a_replica_at_rest(faults):
    """Memory (PSS) and CPU over AT_REST seconds of each exporter on the replica, scraped every
    second by the test's Prometheus (an operator's 15-60 s scrapes cost less CPU)."""
    pids = exporter_pids(REPLICA)
    assert sorted(pids) == ["node", "pgbackrest", "pgbouncer", "postgres", "ssl"]
    before = {job: cpu_seconds(pid) for job, pid in pids.items()}
    time.sleep(AT_REST)
    assert exporter_pids(REPLICA) == pids  # none restarted meanwhile
    for job, pid in sorted(pids.items()):
        FIGURES[f"replica_{job}_exporter_pss_mib"] = round(pss_kib(pid) / 1024, 1)
        FIGURES[f"replica_{job}_exporter_cpu_percent"] = round(
            100 * (cpu_seconds(pid) - before[job]) / AT_REST, 2
        )
    print({k: v for k, v in FIGURES.items() if k.startswith("replica_")})


def test_the_replicas_cable_cut_fires_the_lost_replica_alerts_and_they_clear(faults):
    prometheus = faults["prometheus"]
    assert firing(prometheus) == set()
    switch = ["ip", "-n", FAULTS_LAB.switch_ns, "link", "set", REPLICA.switch_port]
    lab_hosts.run([*switch, "down"])
    try:
        fired = wait_until(
            lambda: firing(prometheus) == LOST_REPLICA, CUT_FIRE_BOUND, f"{LOST_REPLICA} firing"
        )
    finally:
        lab_hosts.run([*switch, "up"])
    cleared = wait_until(lambda: firing(prometheus) == set(), CUT_CLEAR_BOUND, "all cleared")
    FIGURES.update(replica_cut_fired_s=round(fired, 1), replica_cut_cleared_s=round(cleared, 1))
    print(f"replica's cable cut: {sorted(LOST_REPLICA)} fired after {fired:.1f} s, cleared "
          f"{cleared:.1f} s after its return")  # fmt: skip


def block_the_store(host: lab_hosts.LabHost, blocked: bool) -> None:
    """The S3 store unreachable from `host` alone (refused by the host's own nftables)."""
    table = "mlaf_block_s3"
    store = f"ip daddr {FAULTS_LAB.operator_address} tcp dport {S3_PORTS[1]}"
    rules = (
        f"table inet {table} {{\n chain out {{\n  type filter hook output priority 0;\n"
        f"  {store} reject with tcp reset\n }}\n}}\n"
        if blocked
        else f"delete table inet {table}\n"
    )
    argv = ["ip", "netns", "exec", host.netns, "nft", "-f", "-"]
    subprocess.run(argv, input=rules, text=True, check=True, capture_output=True, timeout=30)


def on_primary(command: str, timeout: float = 120) -> str:
    argv = FAULTS_LAB.ssh_command(PRIMARY.address, command)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}: {result.stderr}"
    return result.stdout


def switch_wal() -> None:
    """A write and a finished WAL segment for the archiver."""
    sql = (
        "CREATE TABLE IF NOT EXISTS filler (id int); INSERT INTO filler VALUES (1); "
        "SELECT pg_switch_wal()"
    )
    on_primary(f"cd /tmp && {PSQL} -c {shlex.quote(sql)}")


def test_archiving_into_an_unreachable_store_fires_both_archive_alerts_and_they_clear(faults):
    prometheus = faults["prometheus"]
    alerts = ("PostgresArchiveFailing", "PostgresArchiveBehind")
    assert [alert_state(prometheus, name) for name in alerts] == [None, None]
    block_the_store(PRIMARY, True)
    try:
        start = time.monotonic()
        switch_wal()
        fired: dict[str, float] = {}

        def both_firing() -> bool:
            for name in alerts:
                if name not in fired and alert_state(prometheus, name) == "firing":
                    fired[name] = time.monotonic() - start
            return len(fired) == len(alerts)

        wait_until(both_firing, ARCHIVE_FIRE_BOUND, f"{' and '.join(alerts)} firing")
        ready = query(prometheus, "pg_archive_ready_segments > 0")
        assert list(ready) == [PRIMARY.name]
    finally:
        block_the_store(PRIMARY, False)
    back = time.monotonic()
    switch_wal()  # as a working server would: the archiver is woken by the next segment
    wait_until(
        lambda: [alert_state(prometheus, name) for name in alerts] == [None, None],
        ARCHIVE_CLEAR_BOUND, "the archive alerts cleared",
    )  # fmt: skip
    cleared = time.monotonic() - back
    FIGURES.update({f"{name}_fired_s": round(t, 1) for name, t in fired.items()})
    FIGURES["archive_alerts_cleared_s"] = round(cleared, 1)
    print(f"store blocked: {fired} s after the WAL switch; cleared {cleared:.1f} s after")


def servers_scraped(prometheus: str) -> dict[str, set[tuple[str, str]]]:
    """server -> (job, health) of each of its active targets."""
    found: dict[str, set[tuple[str, str]]] = {}
    for target in api(prometheus, "targets")["activeTargets"]:
        labels = target["labels"]
        found.setdefault(labels["server"], set()).add((labels["job"], target["health"]))
    return found


def test_a_replica_added_and_removed_the_targets_follow(faults):
    prometheus, workdir = faults["prometheus"], faults["dir"]
    every_job_up = {(job, "up") for job in ("postgres", "node", "pgbouncer", "ssl")}

    def follow(outputs: dict, wanted: dict) -> float:
        """The outputs written where Prometheus reads them, as an operator's pipeline does."""
        (workdir / "rules.yml").write_text(outputs["alert_rules"])
        reload(prometheus)
        write_targets(workdir, outputs["prometheus_targets"])
        return wait_until(lambda: servers_scraped(prometheus) == wanted, TARGETS_BOUND, f"{wanted}")

    two = faults["up"](2)
    servers = {g["labels"]["server"] for g in two["prometheus_targets"]}
    assert servers == {PRIMARY.name, REPLICA.name, SPARE.name}
    added = follow(two, {s: every_job_up for s in servers})
    one = faults["up"](1)
    removed = follow(one, {PRIMARY.name: every_job_up, REPLICA.name: every_job_up})
    FIGURES.update(replica_added_up_s=round(added, 1), replica_removed_gone_s=round(removed, 1))
    print(f"targets: the added replica's up {added:.1f} s after the file, gone {removed:.1f} s")
