"""The exporters (monitoringSources): the plan's monitor and exporters steps, the commands and
files host/exporters.py writes (no password on a command line or in a file wider than 0600),
PgBouncer's stats user, the monitor role's pg_hba line, and the secret they need."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import common
import exporters
import pooler
import pytest

from mastodon_data import plan
from mastodon_data.config import ConfigError, parse_settings
from mastodon_data.monitoring import targets
from tests.fixtures import hosts_stack

HOSTS = hosts_stack(count=3, replicas=1)
BACKUPS = {"backups": True, "backupBucket": "mastodon-pg-backups", "backupAccessKeyId": "KEYID1"}
SECRETS = {"sshPrivateKey": "k", "replicationPassword": "r" * 20, "dbPassword": "d" * 20,
           "monitorPassword": "m" * 20}  # fmt: skip
BACKUP_SECRETS = {"backupCipherPassphrase": "p" * 24, "backupSecretAccessKey": "s" * 20}
MONITORING = {"monitoringSources": ["10.10.0.5/32"]}
PASSWORD = "monitor:pass\\word-0123456789"


def plan_for(**changes):
    settings = parse_settings({**HOSTS, **changes}, set(SECRETS) | set(BACKUP_SECRETS))
    return {s.name: s for s in
            plan.steps(settings.replication, settings.hosts, backups=settings.backups)}  # fmt: skip


def test_without_monitoring_sources_no_step_no_stats_user_no_hba_line():
    steps = plan_for()
    assert not [name for name in steps if name.startswith(("monitor", "exporters"))]
    assert steps["pooler-db1"].after == ("primary",)
    assert steps["pooler-db1"].params["monitor_user"] == ""
    assert steps["primary"].params["monitor_user"] == ""


def test_the_monitor_role_first_then_the_poolers_then_each_hosts_exporters():
    steps = plan_for(**MONITORING, **BACKUPS)
    assert list(steps)[-6:] == ["pooler-db1", "pooler-db2", "health-db1", "health-db2",
                                "exporters-db1", "exporters-db2"]  # fmt: skip
    assert steps["monitor"].host.name == "db1" and steps["monitor"].requires == ("primary",)
    assert steps["monitor"].params == {"postgres_version": 18, "port": 5432,
                                       "monitor_user": "mastodon_monitor"}  # fmt: skip
    assert steps["monitor"].secret_params == {"monitor_password": "monitorPassword"}
    assert steps["pooler-db2"].after == ("replica-db2", "monitor")
    assert steps["pooler-db2"].params["monitor_user"] == "mastodon_monitor"
    assert steps["replica-db2"].params["monitor_user"] == "mastodon_monitor"
    assert steps["exporters-db1"].after == ("primary", "slots", "monitor", "backup-db1",
                                            "pooler-db1", "health-db1")  # fmt: skip
    assert steps["exporters-db2"].after == ("replica-db2", "backup-db2", "pooler-db2",
                                            "health-db2", "monitor")  # fmt: skip


def test_an_exporters_step_runs_every_exporter_of_its_stack_on_the_private_address():
    params = plan_for(**MONITORING, **BACKUPS)["exporters-db2"].params
    sent = {**HOST_PARAMS, "postgres_queries": targets.postgres_queries()}
    # The builds come from the program's loader (tests/unit/test_exporter_shipping.py).
    assert params.pop("exporter_builds") == {}
    assert params == {key: value for key, value in sent.items() if key != "monitor_password"}
    assert params["postgres_queries"].count("\npg_replica:\n") == 1
    unpooled = plan_for(**MONITORING, pgbouncer=False)["exporters-db1"].params
    assert unpooled["exporter_ports"] == {"postgres": 9187, "node": 9100, "ssl": 9219}
    assert unpooled["pgbouncer_port"] == 0
    assert unpooled["stanza"] == ""  # no backups: no backup metrics


def test_the_monitor_password_is_a_required_secret_only_with_monitoring_sources():
    with pytest.raises(ConfigError, match="monitorPassword = \\(not set\\): missing secret"):
        parse_settings({**HOSTS, **MONITORING}, {"sshPrivateKey", "replicationPassword",
                                                 "dbPassword"})  # fmt: skip
    settings = parse_settings({**HOSTS, **MONITORING}, set(SECRETS))
    assert "monitorPassword" in settings.required_secrets()
    assert "monitorPassword" not in parse_settings(HOSTS, set(SECRETS)).required_secrets()


HOST_PARAMS = {
    "port": 5432,
    "private_address": "10.0.0.2",
    "monitor_user": "mastodon_monitor",
    "exporter_ports": {"postgres": 9187, "node": 9100, "pgbouncer": 9127, "ssl": 9219},
    "pgbouncer_port": 6432,
    "postgres_queries": "pg_replica:\n  query: SELECT 1\n",
    "stanza": "mastodon",
    "monitor_password": PASSWORD,
}
LAUNCHERS = {
    "postgres": "exec setpriv --reuid=postgres --regid=postgres --init-groups -- env "
    "DATA_SOURCE_NAME='postgresql://mastodon_monitor@:5432/postgres?host=/var/run/postgresql"
    "&sslmode=disable' PGPASSFILE=/etc/mastodon-data/exporters/monitor.pgpass "
    "/usr/bin/prometheus-postgres-exporter --web.listen-address=10.0.0.2:9187 "
    "--extend.query-path=/etc/mastodon-data/exporters/postgres_queries.yaml",
    "node": "exec setpriv --reuid=prometheus --regid=prometheus --init-groups -- env "
    "/usr/bin/prometheus-node-exporter --web.listen-address=10.0.0.2:9100 "
    "--collector.textfile.directory=/var/lib/prometheus/node-exporter",
    "pgbouncer": "exec setpriv --reuid=postgres --regid=postgres --init-groups -- env "
    "PGPASSFILE=/etc/mastodon-data/exporters/monitor.pgpass /usr/local/bin/pgbouncer_exporter "
    "--web.listen-address=10.0.0.2:9127 '--pgBouncer.connectionString=postgres://"
    "mastodon_monitor@:6432/pgbouncer?host=/var/run/postgresql&sslmode=disable' "
    "--pgBouncer.pid-file=/var/run/postgresql/pgbouncer.pid",
    "ssl": "exec setpriv --reuid=prometheus --regid=prometheus --init-groups -- env "
    "/usr/local/bin/ssl_exporter --web.listen-address=10.0.0.2:9219 "
    "--config.file=/etc/mastodon-data/exporters/ssl_exporter.yml",
    "pgbackrest": "exec setpriv --reuid=root --regid=root --init-groups -- env /usr/bin/python3 "
    "/etc/mastodon-data/exporters/backup_metrics.py --stanza=mastodon "
    "--output=/var/lib/prometheus/node-exporter/pgbackrest.prom --every=60",
}


@pytest.mark.parametrize("job", sorted(LAUNCHERS))
def test_each_launcher_runs_its_exporter_on_the_private_address_without_the_password(job):
    text = exporters.launcher_text(job, HOST_PARAMS)
    assert text == f"#!/bin/sh\n# Written by mastodon-data: the {job} exporter.\n{LAUNCHERS[job]}\n"
    assert "pass\\word" not in text and "0123456789" not in text


def test_the_files_the_password_only_in_the_0600_pass_file_of_postgres(tmp_path, monkeypatch):
    conf = tmp_path / "mastodon-data" / "exporters"
    for name, path in (
        ("CONF_DIR", conf),
        ("PASSFILE", conf / "monitor.pgpass"),
        ("QUERIES", conf / "q.yaml"),
        ("SSL_CONFIG", conf / "ssl.yml"),
    ):
        monkeypatch.setattr(exporters, name, path)  # fmt: skip
    monkeypatch.setattr(exporters, "systemd_running", lambda: False)
    jobs = list(HOST_PARAMS["exporter_ports"])
    previous = os.umask(0o077)  # the host steps' (plan.LAUNCHER)
    try:
        assert exporters.write_files(HOST_PARAMS, jobs) == dict.fromkeys(jobs, True)
    finally:
        os.umask(previous)
    # postgres and prometheus read these files: the directories are not the umask's 0700.
    assert [stat.S_IMODE(d.stat().st_mode) for d in (conf.parent, conf)] == [0o755, 0o755]
    passfile = conf / "monitor.pgpass"
    assert passfile.read_text() == "*:*:*:mastodon_monitor:monitor\\:pass\\\\word-0123456789\n"
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600 and passfile.owner() == "postgres"
    wider = [p.name for p in conf.iterdir() if p != passfile and "0123456789" in p.read_text()]
    assert wider == []
    assert (conf / "ssl.yml").read_text() == exporters.SSL_MODULES
    assert exporters.write_files(HOST_PARAMS, jobs) == dict.fromkeys(jobs, False)  # idempotent
    changed = exporters.write_files({**HOST_PARAMS, "monitor_password": "n" * 20}, jobs)
    assert changed == {"postgres": True, "node": False, "pgbouncer": True,
                       "ssl": False}  # fmt: skip


def test_the_systemd_unit_runs_the_launcher_and_restarts_it():
    assert exporters.unit_text("node") == (
        "[Unit]\nDescription=mastodon-data: the node exporter\n"
        "After=network-online.target postgresql.service pgbouncer.service\n"
        "[Service]\nExecStart=/bin/sh /etc/mastodon-data/exporters/node.sh\n"
        "Restart=always\nRestartSec=5\n[Install]\nWantedBy=multi-user.target\n"
    )


def test_pgbouncer_lets_the_monitor_role_read_its_statistics_only_with_monitoring():
    params = {"postgres_version": 15, "port": 5432, "private_address": "10.0.0.2",
              "primary_address": "10.0.0.1", "read_db_name": "mastodon_production_replica",
              "db_name": "mastodon_production", "db_user": "mastodon", "pgbouncer_port": 6432,
              "pool_size": 45, "pgbouncer_max_client_conn": 1000,
              "pgbouncer_open_files": 4096}  # fmt: skip
    off = pooler.ini_settings(pooler.ini_text({**params, "monitor_user": ""}, common.Cluster(15)))
    on = pooler.ini_text({**params, "monitor_user": "mastodon_monitor"}, common.Cluster(15))
    assert "stats_users" not in off
    assert pooler.ini_settings(on)["stats_users"] == "mastodon_monitor"
    assert "admin_users" not in pooler.ini_settings(on)
    users = {"mastodon": "SCRAM-SHA-256$a", "mastodon_monitor": "SCRAM-SHA-256$b"}
    assert pooler.userlist_text(users) == (
        '"mastodon" "SCRAM-SHA-256$a"\n"mastodon_monitor" "SCRAM-SHA-256$b"\n'
    )


def test_pg_hba_lets_the_monitor_role_in_through_the_local_socket_only():
    params = {"db_name": "mastodon_production", "db_user": "mastodon", "pool_peers": [],
              "private_address": "10.0.0.2",
              "postgres_allowed_sources": ["10.0.1.0/24"]}  # fmt: skip
    assert common.app_hba_lines({**params, "monitor_user": "mastodon_monitor"}) == [
        "hostssl mastodon_production mastodon 10.0.1.0/24 scram-sha-256",
        "local postgres mastodon_monitor scram-sha-256",
    ]


def test_the_backup_metrics_on_a_timer_their_script_and_their_removal(tmp_path, monkeypatch):
    """With backups: backup_metrics.py copied beside the launchers, a oneshot service on a
    60 s timer (systemd); backups turned off: the timer disabled and every file of it gone."""
    conf, units, textfiles = tmp_path / "exporters", tmp_path / "units", tmp_path / "node-exporter"
    monkeypatch.setattr(exporters, "CONF_DIR", conf)
    monkeypatch.setattr(exporters, "METRICS_SCRIPT", conf / "backup_metrics.py")
    monkeypatch.setattr(exporters, "UNIT_DIR", units)
    monkeypatch.setattr(exporters, "TEXTFILE_DIR", textfiles)
    monkeypatch.setattr(exporters, "BACKUP_METRICS", textfiles / "pgbackrest.prom")
    for name, file in (
        ("PASSFILE", "monitor.pgpass"),
        ("QUERIES", "q.yaml"),
        ("SSL_CONFIG", "s.yml"),
    ):
        monkeypatch.setattr(exporters, name, conf / file)
    monkeypatch.setattr(exporters, "systemd_running", lambda: True)
    ran = []
    monkeypatch.setattr(exporters, "run", lambda argv, **_: ran.append(argv))
    units.mkdir()
    assert exporters.write_files(HOST_PARAMS, ["pgbackrest"]) == {"pgbackrest": True}
    script = conf / "backup_metrics.py"
    assert script.read_text() == Path(exporters.backup_metrics.__file__).read_text()
    assert stat.S_IMODE(script.stat().st_mode) == 0o755 and textfiles.is_dir()
    once = (f"/usr/bin/python3 {script} --stanza=mastodon "
            f"--output={textfiles / 'pgbackrest.prom'}")  # fmt: skip
    assert (units / "mastodon-data-pgbackrest-exporter.service").read_text() == (
        "[Unit]\nDescription=mastodon-data: pgBackRest's state for node_exporter\n"
        "After=network-online.target postgresql.service\n"
        f"[Service]\nType=oneshot\nExecStart={once}\nTimeoutStartSec=150\n"
    )
    assert (units / "mastodon-data-pgbackrest-exporter.timer").read_text() == (
        "[Unit]\nDescription=mastodon-data: pgBackRest's state for node_exporter, on a timer\n"
        "[Timer]\nOnActiveSec=0\nOnUnitActiveSec=60s\nAccuracySec=5s\n"
        "[Install]\nWantedBy=timers.target\n"
    )
    assert exporters.write_files(HOST_PARAMS, ["pgbackrest"]) == {"pgbackrest": False}
    (textfiles / "pgbackrest.prom").write_text("pgbackrest_info_success 1\n")
    assert exporters.retire_backup_metrics({**HOST_PARAMS, "stanza": ""}) is True
    assert ran == [["systemctl", "disable", "--now", "mastodon-data-pgbackrest-exporter.timer"]]
    assert sorted(p.name for p in conf.iterdir()) == ["monitor.pgpass", "q.yaml", "s.yml"]
    assert list(units.iterdir()) == list(textfiles.iterdir()) == []
    assert exporters.retire_backup_metrics({**HOST_PARAMS, "stanza": ""}) is False
