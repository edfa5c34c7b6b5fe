"""Issue 23's faults against a real Prometheus, on a lab of their own (mlaf) through the engine:
a hosts-mode stack (primary + 1 replica of three hosts, backups into the lab's S3 store,
monitoringSources set), Debian's Prometheus over its `alert_rules` and `prometheus_targets`
exactly as output (no rule changed: the archive wait is the stack's own setting), scraping and
evaluating every second. In sequence: the exporters' memory and CPU on the replica at rest; the
replica's cable cut (the alerts of a lost replica fire, and clear once it is back); its
replication alone cut (PostgresReplicaNotStreaming); the store unreachable from the primary
(PostgresArchiveFailing and PostgresArchiveBehind fire, and clear); each fault's alerts exactly;
a replica added and removed with `pulumi up`, the targets rewritten from the output as an
operator's pipeline does (Prometheus finds the new replica's exporters up, then no longer
scrapes them). Figures: results/alert_faults.json."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from labkit import applied, new_secrets, own_lab, wait_until, write_figures
from promlab import (
    api,
    built_exporters,
    monitored_with_backups,
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
# Each fault: the alerts that fire (name, server; the instance for a rule that aggregates by
# it), and the bounds to all of them firing and to none, well above what two runs measured
# beside other lab tests (load average up to 9; docs/operators/monitoring.md).
# The cable cut: the replica's targets fail at the next scrape and the primary's walsender lets
# go within replicationTimeout (10 s); the rules' `for: 1m`. PostgresReplicaNotStreaming needs
# the replica's own exporter, which is behind the cut cable too.
CABLE_CUT = {("PostgresDown", REPLICA.name), ("PgbouncerDown", REPLICA.name),
             ("PostgresReplicasMissing", f"{PRIMARY.address}:9187")}  # fmt: skip
# Replication alone cut (the replica's packets to the primary's 5432 dropped): the walreceiver
# gives up within replicationTimeout, then `for: 1m`.
NOT_STREAMING = {("PostgresReplicaNotStreaming", REPLICA.name),
                 ("PostgresReplicasMissing", f"{PRIMARY.address}:9187")}  # fmt: skip
REPLICA_FIRE_BOUND, REPLICA_CLEAR_BOUND = 150, 60  # measured: 61-77 s, 1-3 s
# The store unreachable: archive_command fails after pgBackRest's archive-timeout (60 s, with
# archive-async: host/repository.py), then PostgresArchiveFailing's `for: 2m`;
# PostgresArchiveBehind once the segment waited ARCHIVE_WAIT.
ARCHIVE_FAILING = {("PostgresArchiveFailing", PRIMARY.name),
                   ("PostgresArchiveBehind", PRIMARY.name)}  # fmt: skip
ARCHIVE_FIRE_BOUND, ARCHIVE_CLEAR_BOUND = 300, 120  # measured: 182 s, 2-3 s
# Pending from the start and firing after its `for: 15m`: no backup is made here (stanza
# status 2); test_exporters.py covers the backup alerts.
NOT_A_FAULT = {"BackupStateUnknown"}
TARGETS_BOUND = 60  # file_sd is watched: the file read within seconds (measured: 0.5-4 s)
FIGURES: dict[str, float] = {}


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    store = LabS3(FAULTS_LAB.operator_address, S3_DIR, *S3_PORTS)
    with built_exporters(), own_lab(FAULTS_LAB, 3):
        try:
            store.start()
            store.make_bucket(BUCKET)
            workdir = tmp_path_factory.mktemp("alert-faults")
            settings, added_secrets = monitored_with_backups(FAULTS_LAB, store, BUCKET)
            settings["alertArchiveWaitSeconds"] = ARCHIVE_WAIT
            stack_secrets = new_secrets(FAULTS_LAB) | added_secrets
            stack = LabStack("alertfaults", workdir / "stack")
            stack.prepare()

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
    return {(a["alertname"], a.get("server", a.get("instance"))) for a in alerts
            if a["alertname"] not in NOT_A_FAULT}  # fmt: skip


def fault_fires_and_clears(prometheus: str, fault: str, expected: set, begin, end, bounds):
    """`begin()` the fault: exactly `expected` fires within bounds[0]; `end()` it: none is left
    within bounds[1]. Figures: each alert's seconds to firing, and to all cleared."""
    assert firing(prometheus) == set()
    begin()
    start, fired = time.monotonic(), {}

    def all_firing() -> bool:
        now = firing(prometheus)
        fired.update({name: time.monotonic() - start for name, _ in now if name not in fired})
        return now == expected

    try:
        wait_until(all_firing, bounds[0], f"{fault}: {sorted(expected)} firing")
    finally:
        end()
    cleared = wait_until(lambda: firing(prometheus) == set(), bounds[1], f"{fault}: cleared")
    FIGURES.update({f"{fault}_{name}_fired_s": round(t, 1) for name, t in fired.items()})
    FIGURES[f"{fault}_cleared_s"] = round(cleared, 1)
    print(f"{fault}: fired after {fired} s, all cleared {cleared:.1f} s after its end")


def cpu_seconds(pid: int) -> float:
    """The process's CPU time and its ended children's (backup_metrics.py runs pgbackrest)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(map(int, fields[11:15])) / os.sysconf("SC_CLK_TCK")  # u, s, cu, cs time


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
    switch = ["ip", "-n", FAULTS_LAB.switch_ns, "link", "set", REPLICA.switch_port]
    fault_fires_and_clears(
        faults["prometheus"], "cable_cut", CABLE_CUT,
        lambda: lab_hosts.run([*switch, "down"]), lambda: lab_hosts.run([*switch, "up"]),
        (REPLICA_FIRE_BOUND, REPLICA_CLEAR_BOUND),
    )  # fmt: skip


def nft_table(host: lab_hosts.LabHost, table: str, rule: str | None) -> None:
    """A table of the host's own nftables with one output rule; None removes it."""
    rules = (
        f"table inet {table} {{\n chain out {{\n  type filter hook output priority 0;\n"
        f"  {rule}\n }}\n}}\n"
        if rule
        else f"delete table inet {table}\n"
    )
    argv = ["ip", "netns", "exec", host.netns, "nft", "-f", "-"]
    subprocess.run(argv, input=rules, text=True, check=True, capture_output=True, timeout=30)


def test_replication_cut_fires_replica_not_streaming_and_it_clears(faults):
    """The replica's exporters stay reachable; only its packets to the primary's PostgreSQL
    are dropped."""
    rule = f"ip daddr {PRIMARY.address} tcp dport 5432 drop"
    fault_fires_and_clears(
        faults["prometheus"], "replication_cut", NOT_STREAMING,
        lambda: nft_table(REPLICA, "mlaf_cut", rule), lambda: nft_table(REPLICA, "mlaf_cut", None),
        (REPLICA_FIRE_BOUND, REPLICA_CLEAR_BOUND),
    )  # fmt: skip


def block_the_store(blocked: bool) -> None:
    """The S3 store refused to the primary alone, by its own nftables."""
    rule = f"ip daddr {FAULTS_LAB.operator_address} tcp dport {S3_PORTS[1]} reject with tcp reset"
    nft_table(PRIMARY, "mlaf_block_s3", rule if blocked else None)
    switch_wal()  # a finished segment for the archiver (it wakes the archiver too)


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
    fault_fires_and_clears(
        faults["prometheus"], "store_unreachable", ARCHIVE_FAILING,
        lambda: block_the_store(True), lambda: block_the_store(False),
        (ARCHIVE_FIRE_BOUND, ARCHIVE_CLEAR_BOUND),
    )  # fmt: skip


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
