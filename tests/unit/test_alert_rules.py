"""The shipped alert rules (mastodon_data/monitoring/rules.yml): rendered with a stack's values,
loaded by Prometheus's own promtool (Debian's prometheus package, lab/install_packages.sh), and
each alert tested firing and not firing by tests/unit/promtool/rules_test.yml."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import backup_metrics
import pytest
import yaml

from mastodon_data import monitoring
from mastodon_data.config import SECRET_KEYS, parse_settings
from tests.fixtures import DROPLETS

PROMTOOL_TESTS = Path(__file__).parent / "promtool" / "rules_test.yml"
QUERIES = Path(monitoring.__file__).parent / "postgres_queries.yaml"
# What the rules read of each exporter, as its source names it at the version the rules are
# written for (docs/operators/monitoring.md); the PostgreSQL exporter's custom metrics are
# postgres_queries.yaml's, <query>_<column>; the backup metrics are host/backup_metrics.py's.
EXPORTED = {
    "up",  # Prometheus's own, per target
    # prometheus-postgres-exporter 0.11.1, default metrics
    "pg_up", "pg_stat_replication_pg_wal_lsn_diff", "pg_replication_slots_pg_wal_lsn_diff",
    "pg_stat_activity_count", "pg_settings_max_connections", "pg_stat_archiver_failed_count",
    # pgbouncer_exporter v0.12.1 (with --pgBouncer.pid-file)
    "pgbouncer_up", "pgbouncer_pools_client_waiting_connections",
    "pgbouncer_pools_client_maxwait_seconds", "pgbouncer_process_open_fds",
    "pgbouncer_process_max_fds",
    # node_exporter, ssl_exporter v2.4.1
    "node_filesystem_avail_bytes", "node_filesystem_size_bytes", "ssl_cert_not_after",
    "ssl_probe_success",
}  # fmt: skip
PROMQL_WORDS = {"and", "or", "unless", "by", "on", "without", "ignoring", "bool"}
# What rules_test.yml was written for: the defaults, with two replicas.
STACK = {**DROPLETS, "replicaCount": 2}


def rendered(**changes) -> str:
    settings = parse_settings({**STACK, **changes}, frozenset(SECRET_KEYS))
    return monitoring.render_rules(settings.replication, settings.alerts)


def alert_names(rules_text: str) -> list[str]:
    groups = yaml.safe_load(rules_text)["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"]]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    path = shutil.which("promtool")
    assert path, "promtool is missing: bash lab/install_packages.sh (Debian's prometheus)"
    return subprocess.run(
        [path, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_runs_every_case_of_the_rendered_rules(tmp_path):
    (tmp_path / "rules.yml").write_text(rendered())
    shutil.copy(PROMTOOL_TESTS, tmp_path / "rules_test.yml")
    checked = promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_names(rendered()))} rules found" in checked.stdout
    tested = promtool("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.strip().endswith("SUCCESS"), tested.stdout


def test_every_alert_has_a_firing_and_a_quiet_case():
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    names = alert_names(rendered())
    assert len(names) == len(set(names)) == 19
    untested = {
        name: sorted(cases.get(name, set())) for name in names if cases.get(name) != {True, False}
    }
    assert untested == {}, "alerts without a firing (True) and a quiet (False) case"
    assert set(cases) == set(names), "cases of alerts the rules do not have"


def test_thresholds_come_from_the_settings():
    text = rendered(
        replicaCount=3,
        alertReplayLagSize="1GB",
        alertSlotWalPercent=50,
        maxSlotWalKeepSize="20GB",
        alertCertificateDays=7,
        alertFullBackupAgeHours=25,
    )
    rules = {
        rule["alert"]: rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"]
    }
    assert rules["PostgresReplicasMissing"]["expr"].endswith("< 3")
    assert (
        rules["PostgresReplayLagBytes"]["expr"]
        == "pg_stat_replication_pg_wal_lsn_diff > 1073741824"
    )
    assert rules["PostgresSlotWalRetained"]["expr"] == (
        "pg_replication_slots_pg_wal_lsn_diff > 10737418240"
    )
    assert rules["CertificateExpiresSoon"]["expr"].endswith("< 604800")
    assert rules["BackupFullTooOld"]["expr"].endswith("> 90000")
    assert "${" not in text


def test_a_placeholder_without_a_value_is_refused(monkeypatch):
    monkeypatch.setattr(monitoring, "template", lambda: "expr: up > ${unknown_threshold}\n")
    settings = parse_settings(STACK, frozenset(SECRET_KEYS))
    with pytest.raises(ValueError, match="unknown_threshold"):
        monitoring.render_rules(settings.replication, settings.alerts)


def metrics_read(expr: str) -> set[str]:
    """The metric names in a PromQL expression: label matchers, grouping lists, ranges,
    strings and functions taken out."""
    bare = re.sub(r"\{[^}]*\}|\[[^]]*\]|\b(?:by|on)\s*\([^)]*\)", " ", expr)
    names = re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", bare)
    return {name for name in names if name not in PROMQL_WORDS}


def test_the_rules_read_only_metrics_the_exporters_serve():
    custom = {
        f"{query}_{column}"
        for query, spec in yaml.safe_load(QUERIES.read_text()).items()
        for metric in spec["metrics"]
        for column in metric
    }
    assert custom == {
        "pg_replica_in_recovery", "pg_replica_streaming", "pg_replica_lag_seconds",
        "pg_archive_ready_segments", "pg_archive_oldest_ready_seconds",
    }  # fmt: skip
    groups = yaml.safe_load(rendered())["groups"]
    read = set().union(*(metrics_read(rule["expr"]) for g in groups for rule in g["rules"]))
    assert read == EXPORTED | custom | set(backup_metrics.HELP)
