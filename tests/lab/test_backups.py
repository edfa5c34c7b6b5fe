"""Backups through the engine on a lab of its own (mlk, 4 hosts: primary, replica, two spares)
with a real S3-compatible store: moto behind stunnel with a lab CA on the lab's operator address
(lab/s3.py), which pgBackRest verifies. `pulumi up` with backups on configures pgBackRest,
archiving and the timers; `mastodon-data backups` takes and checks backups; `mastodon-data
restore` restores to a point in time on a spare, and, with the primary and its replica gone,
restores the latest state from the bucket alone on the other spare."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest
from labkit import new_secrets, own_lab

from lab import namespaces as lab_hosts
from lab.s3 import LabS3
from lab.stack import LabStack
from tests.fixtures import COMMAND

pytestmark = pytest.mark.lab
BACKUP_LAB = lab_hosts.Lab(
    prefix="mlk", subnet="10.234.0.0/24", state_dir=Path("/var/lib/mastodon-lab-backup")
)
S3_DIR = Path("/var/lib/mastodon-lab-backup-s3")
BUCKET = "mlk-pg-backups"
PSQL = "runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -X -A -t -v ON_ERROR_STOP=1"
CONF = "/etc/pgbackrest/pgbackrest.conf"


def ssh(index: int, command: str, check: bool = True) -> str:
    argv = BACKUP_LAB.ssh_command(BACKUP_LAB.host(index).address, command)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 or not check, f"{command!r} on h{index}: {result.stderr}"
    return result.stdout.strip()


def sql(index: int, statement: str, db: str = "mastodon_production") -> str:
    return ssh(index, f"cd /tmp && {PSQL} -d {db} -c {json.dumps(statement)}")


def backup_config(store: LabS3) -> dict:
    return {
        **lab_hosts.stack_config(BACKUP_LAB, 1, 4),
        "backups": True,
        "backupBucket": BUCKET,
        "backupEndpoint": store.endpoint,
        "backupAccessKeyId": "mlk-lab-key",
        "backupCaCert": store.ca_cert.read_text(),
        "backupArchiveTimeout": "10s",
    }


def tool(stack: LabStack, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """`mastodon-data <args>` as an operator runs it on the stack; (result, its JSON report)."""
    result = subprocess.run(
        [COMMAND, *args[:1], "--stack", stack.name, "--cwd", str(stack.workdir), *args[1:]],
        capture_output=True, text=True, timeout=900, env=stack.env(),
    )  # fmt: skip
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    return result, report


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    store = LabS3(BACKUP_LAB.operator_address, S3_DIR)
    with own_lab(BACKUP_LAB, 4):
        try:
            store.start()
            store.make_bucket(BUCKET)
            stack = LabStack("backups", tmp_path_factory.mktemp("backups") / "stack")
            stack.prepare()
            stack_secrets = {
                **new_secrets(BACKUP_LAB),
                "backupCipherPassphrase": secrets.token_urlsafe(32),
                "backupSecretAccessKey": secrets.token_urlsafe(30),
            }
            stack.plain_config = backup_config(store)
            stack.configure(stack.plain_config, stack_secrets)
            stack.up()
            stack.first_up = stack.last.stdout
            stack.secret_values = stack_secrets
            yield stack
        finally:
            store.stop()


def test_up_configures_archiving_timers_and_the_stanza(stack):
    reports = stack.step_reports()
    primary, replica = reports["backup-mlk-h1"], reports["backup-mlk-h2"]
    assert primary["stanza"] == "checked"
    assert primary["restarted"] is True  # archive_mode needs a restart, said in the report
    assert "WAL archiving on: server restarted" in primary["changed"]
    assert primary["timers"] == replica["timers"] == "written (no systemd here)"
    assert replica["role"] == "replica" and "stanza" not in replica
    for index in (1, 2):
        assert sql(index, "SHOW archive_mode") == "on"
        assert sql(index, "SHOW archive_command") == (
            "/usr/bin/pgbackrest --stanza=mastodon archive-push %p"
        )
        assert ssh(index, f"stat -c '%a %U:%G' {CONF}") == "640 root:postgres"
    timer = ssh(1, "cat /etc/systemd/system/mastodon-data-backup-full.timer")
    assert "OnCalendar=Sun *-*-* 02:30:00" in timer.splitlines()
    service = ssh(2, "cat /etc/systemd/system/mastodon-data-backup-diff.service")
    assert "ExecStart=/usr/bin/pgbackrest --stanza=mastodon --type=diff backup" in service
    assert "pg_is_in_recovery()' | grep -qx f" in service  # only the primary backs up
    # The status report has the repository and the archiver: WAL reached it, none failed.
    status = stack.outputs()["replication"]["mlk-h1"]["backups"]
    assert status["status"] == "no valid backups" and status["archive"]["failed_count"] == 0
    assert status["archive"]["archived_count"] >= 1
    assert stack.outputs()["backups"]["bucket"] == BUCKET
    for key, value in stack.secret_values.items():  # no secret in the engine's log
        if key != "sshPrivateKey":
            assert value not in stack.first_up, key


def test_check_replication_reports_the_wal_archive(stack):
    result = subprocess.run(
        [COMMAND, "check-replication"], input=json.dumps(stack.outputs()),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    line = result.stdout.splitlines()[1]
    assert line.startswith("mlk-h1: WAL archive, ") and ", 0 failed, last 0000000100" in line
    assert line.endswith(" B not yet archived")


def test_a_second_up_changes_nothing(stack):
    stack.up()
    changes = stack.last_changes()
    assert set(changes) == {"same"}, changes


def test_point_in_time_restore_on_a_spare(stack):
    sql(1, "CREATE TABLE kept (id int PRIMARY KEY)")
    sql(1, "INSERT INTO kept SELECT generate_series(1, 1000)")
    result, report = tool(stack, "backups", "now", "--type", "full")
    assert result.returncode == 0, result.stderr
    assert report["last_backup"]["type"] == "full" and report["status"] == "ok"
    sql(1, "CREATE TABLE notes (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
    sql(1, "INSERT INTO notes (id) SELECT generate_series(1, 100)")
    time.sleep(1.1)
    target = sql(1, "SELECT now()::text")
    time.sleep(1.1)
    sql(1, "INSERT INTO notes (id) SELECT generate_series(101, 200)")
    sql(1, "DROP TABLE kept")
    result, report = tool(stack, "backups", "check")  # switches and archives the WAL
    assert result.returncode == 0, result.stderr
    assert report["healthy"] is True and report["archive"]["failed_count"] == 0
    result, report = tool(stack, "restore", "--host", "mlk-h3", "--time", target)
    assert result.returncode == 0, result.stderr
    assert report["target_time"] == target and report["timeline"] == 2
    assert "recovery stopping before commit" in report["recovery"]
    assert sql(3, "SELECT count(*), max(id) FROM notes") == "100|100"
    assert sql(3, "SELECT count(*) FROM kept") == "1000"  # dropped after T: there
    assert sql(3, "SELECT pg_is_in_recovery()") == "f"
    assert sql(3, "SHOW archive_mode") == "off"  # a rehearsal writes nothing into the bucket
    tables = {t["name"] for t in report["tables"]}
    assert {"public.kept", "public.notes"} <= tables


def test_restore_refuses_the_stacks_own_hosts_and_a_cluster_in_place(stack):
    result, _ = tool(stack, "restore", "--host", "mlk-h2")
    assert result.returncode == 1
    assert "mlk-h2 is this stack's replica: restore onto a spare host" in result.stderr
    result, _ = tool(stack, "restore", "--host", "mlk-h3")
    assert result.returncode == 1
    assert "holds a cluster; restore onto a spare host, or pass --overwrite" in result.stderr


def test_a_new_primary_from_the_bucket_alone(stack):
    sql(1, "CREATE TABLE survivors (id int PRIMARY KEY)")
    sql(1, "INSERT INTO survivors SELECT generate_series(1, 500)")
    result, _ = tool(stack, "backups", "check")  # the last rows' WAL is in the bucket
    assert result.returncode == 0, result.stderr
    for index in (1, 2):  # the primary and its replica are lost, disks and all
        ssh(index, "pg_ctlcluster 15 main stop -m immediate; rm -rf /var/lib/postgresql/15/main")
    result, report = tool(stack, "restore", "--host", "mlk-h4")
    assert result.returncode == 0, result.stderr
    assert report["target_time"] == "latest" and report["timeline"] == 2
    assert sql(4, "SELECT count(*), max(id) FROM survivors") == "500|500"
    assert sql(4, "SELECT count(*) FROM notes") == "200"
    assert sql(4, "SELECT to_regclass('kept') IS NULL") == "t"  # dropped before the end


def test_the_restored_host_becomes_the_stacks_primary_and_archives_again(stack):
    hosts = stack.plain_config["hosts"]  # mlk-h4 first: the primary; the others spares
    stack.set_plain({"hosts": [hosts[3], *hosts[:3]], "replicaCount": 0})
    stack.up()
    report = stack.step_reports()["backup-mlk-h4"]
    assert report["stanza"] == "checked" and report["restarted"] is True
    assert sql(4, "SHOW archive_mode") == "on"
    sql(4, "INSERT INTO survivors SELECT generate_series(501, 600)")
    result, report = tool(stack, "backups", "now", "--type", "diff")
    assert result.returncode == 0, result.stderr
    assert [b["type"] for b in report["backups"]] == ["full", "diff"]
    result, report = tool(stack, "backups", "check")
    assert result.returncode == 0 and report["healthy"] is True, result.stderr
    assert report["archive"]["failed_count"] == 0
