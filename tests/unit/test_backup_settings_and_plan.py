"""Backups with pgBackRest, without hosts: the settings and their errors, the plan's backup
steps, the files the host scripts write (pgbackrest.conf, archiving, the timers), and the
program on mocks (droplets: a bucket of its own and a key scoped to it; hosts: given ones)."""

from __future__ import annotations

import json
import subprocess
import sys

import backup
import pytest
import repository
from program_harness import SECRETS, SPACES_ACCESS_KEY, SPACES_SECRET_KEY, run_program

from mastodon_data import plan
from mastodon_data.config import ConfigError, parse_settings
from mastodon_data.host_params import SCRIPTS
from tests.fixtures import DROPLETS, MANAGED, hosts_stack

PASSPHRASE = "backup-passphrase-0123456789"
HOST_KEY_SECRET = "host-key-secret-0123456789"
ON = {"backups": True, "backupBucket": "mastodon-pg-backups"}
HOSTS = {**hosts_stack(count=3, replicas=1), **ON, "backupAccessKeyId": "KEYID123"}
BACKUP_SECRETS = {**SECRETS, "backupCipherPassphrase": PASSPHRASE}
HOSTS_SECRETS = {**BACKUP_SECRETS, "backupSecretAccessKey": HOST_KEY_SECRET}


def problems(config: dict, secrets: dict) -> str:
    with pytest.raises(ConfigError) as error:
        parse_settings(config, set(secrets))
    return str(error.value)


def test_defaults_of_a_droplets_stack_with_backups():
    backups = parse_settings({**DROPLETS, **ON}, set(BACKUP_SECRETS)).backups
    assert backups.make_bucket is True
    assert backups.backup_endpoint == "nyc3.digitaloceanspaces.com"
    assert backups.backup_region == "nyc3"
    assert (backups.backup_retention_full, backups.backup_retention_diff) == (2, 6)
    assert backups.backup_full_schedule == "Sun *-*-* 02:30:00"
    assert backups.backup_diff_schedule == "Mon..Sat *-*-* 02:30:00"
    assert backups.backup_archive_timeout == "60s" and backups.stanza == "mastodon"
    assert parse_settings(DROPLETS, set(SECRETS)).backups is None  # off by default


def test_missing_passphrase_and_bucket_are_named_with_their_fix():
    text = problems({**DROPLETS, "backups": True}, SECRETS)
    assert (
        "mastodon-data:backupBucket = '': backups need a bucket for the repository. "
        "Fix: pulumi config set mastodon-data:backupBucket <stack>-pg-backups"
    ) in text
    assert "mastodon-data:backupCipherPassphrase = (not set): missing secret." in text


def test_hosts_mode_needs_the_repository_key_and_droplets_mode_refuses_one():
    text = problems({**HOSTS, "backupAccessKeyId": ""}, BACKUP_SECRETS)
    assert "backupAccessKeyId = '': hosts mode needs the repository's access key" in text
    assert "mastodon-data:backupSecretAccessKey = (not set): missing secret." in text
    text = problems({**DROPLETS, **ON, "backupAccessKeyId": "X"}, HOSTS_SECRETS)
    assert "backupAccessKeyId = [set]: droplets mode makes the backup bucket's own key" in text
    assert "backupSecretAccessKey = [set]: droplets mode makes the backup bucket's own key" in text


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [
        ("backupRetentionFull", 0, "not an integer from 1 to 100"),
        ("backupFullSchedule", "Sun\n[Service]", "not a systemd OnCalendar expression"),
        ("backupArchiveTimeout", "2s", "not from 10s to 60min"),
        ("backupEndpoint", "https://x", "not host[:port]"),
        ("backupEndpoint", "s3.example.com:99999", "the port is not 1 to 65535"),
        ("backupCaCert", "not a pem", "not a PEM certificate"),
        ("backupBucket", "Backups", "not a DNS-compatible bucket name"),
    ],
)
def test_bad_values_are_refused(key, value, what):
    assert f"mastodon-data:{key} = {value!r}: {what}" in problems(
        {**HOSTS, key: value}, HOSTS_SECRETS
    )


def test_managed_mode_refuses_backups():
    text = problems({**MANAGED, "backups": True}, {})
    assert "managed PostgreSQL is backed up by DigitalOcean itself" in text


def test_short_passphrase_is_refused_without_showing_it():
    from mastodon_data.config import secret_problems

    (line,) = secret_problems("backupCipherPassphrase", "short")
    assert "shorter than 20 characters" in line and "short" not in line.split("=")[1][:12]


def test_plan_adds_a_backup_step_per_host_after_replication_and_before_the_reports():
    settings = parse_settings(HOSTS, set(HOSTS_SECRETS))
    steps = plan.steps(settings.replication, settings.hosts, backups=settings.backups)
    names = [s.name for s in steps]
    assert names == ["primary", "replica-db2", "slots", "backup-db1", "backup-db2", "status-db1",
                     "status-db2", "pooler-db1", "pooler-db2", "health-db1",
                     "health-db2"]  # fmt: skip
    by_name = {s.name: s for s in steps}
    # After every replication step: the primary's restart must not cut a base backup short.
    assert by_name["backup-db1"].after == by_name["backup-db2"].after == ("primary", "replica-db2")
    assert by_name["status-db1"].after == (
        "primary", "replica-db2", "slots", "backup-db1", "backup-db2"
    )  # fmt: skip
    assert by_name["status-db1"].params["stanza"] == "mastodon"
    # Its host's backup step may restart PostgreSQL: the pool's probe waits, re-run by nothing.
    for host in ("db1", "db2"):
        pooler = by_name[f"pooler-{host}"]
        assert (pooler.requires, f"backup-{host}" in pooler.after) == ((f"backup-{host}",), False)
    params = by_name["backup-db2"].params
    assert params["role"] == "replica" and params["action"] == "configure"
    assert {key: params[key] for key in params if key.startswith("backup_")} == {
        "backup_endpoint": "nyc3.digitaloceanspaces.com",
        "backup_bucket": "mastodon-pg-backups",
        "backup_region": "nyc3",
        "backup_path": "/pgbackrest",
        "backup_ca_cert": "",
        "backup_retention_full": 2,
        "backup_retention_diff": 6,
        "backup_full_schedule": "Sun *-*-* 02:30:00",
        "backup_diff_schedule": "Mon..Sat *-*-* 02:30:00",
        "backup_archive_timeout": "60s",
    }
    # The backup scripts ship repository.py with them; secrets only in the payload.
    for script in ("restore", "status"):  # each imports repository.py
        assert set(plan.script_files(script)) == {"common.py", "repository.py", f"{script}.py"}
    # backup.py pauses the server's pools around a restart (switchover.py's PAUSE and RESUME)
    assert set(plan.script_files("backup")) == {
        "backup.py", "common.py", "pooler.py", "promote.py", "repository.py", "switchover.py",
        "tls.py",
    }  # fmt: skip
    payload = plan.payload(by_name["backup-db1"], params, {
        "backupAccessKeyId": "KEYID123", "backupSecretAccessKey": HOST_KEY_SECRET,
        "backupCipherPassphrase": PASSPHRASE})  # fmt: skip
    assert payload["params"]["backup_cipher_passphrase"] == PASSPHRASE
    assert PASSPHRASE not in plan.command_line("root")


def test_without_backups_the_plan_is_unchanged():
    settings = parse_settings(hosts_stack(count=3, replicas=1), set(SECRETS))
    steps = plan.steps(settings.replication, settings.hosts)
    assert [s.name for s in steps] == [
        "primary", "replica-db2", "slots", "status-db1", "status-db2", "pooler-db1", "pooler-db2",
        "health-db1", "health-db2",
    ]  # fmt: skip
    assert {s.params["stanza"] for s in steps if s.script == "status"} == {""}


REPO_PARAMS = {
    "stanza": "mastodon",
    "backup_endpoint": "10.234.0.1:19001",
    "backup_bucket": "b-1",
    "backup_region": "nyc3",
    "backup_path": "/pgbackrest",
    "backup_ca_cert": "PEM",
    "backup_retention_full": 3,
    "backup_retention_diff": 5,
    "backup_access_key_id": "KEYID",
    "backup_secret_access_key": "SECRET",
    "backup_cipher_passphrase": "PASS",
}


def test_pgbackrest_conf_names_the_repository_and_the_cluster():
    text = repository.conf_text(REPO_PARAMS, 17, 5433).splitlines()
    for line in (
        "repo1-type=s3",
        "repo1-s3-endpoint=10.234.0.1",
        "repo1-storage-port=19001",
        "repo1-s3-bucket=b-1",
        "repo1-s3-uri-style=path",
        "repo1-bundle=y",
        "repo1-s3-key=KEYID",
        "repo1-s3-key-secret=SECRET",
        "repo1-cipher-type=aes-256-cbc",
        "repo1-cipher-pass=PASS",
        "repo1-retention-full=3",
        "repo1-retention-diff=5",
        "repo1-storage-ca-file=/etc/pgbackrest/repository-ca.crt",
        "archive-async=y",
        "archive-timeout=60",
        "[mastodon]",
        "pg1-path=/var/lib/postgresql/17/main",
        "pg1-port=5433",
    ):
        assert line in text
    no_ca = {**REPO_PARAMS, "backup_ca_cert": ""}
    conf = repository.conf_text(no_ca, 15, 5432)
    assert "storage-ca-file" not in conf
    assert repository.endpoint_parts("nyc3.digitaloceanspaces.com") == (
        "nyc3.digitaloceanspaces.com", 443)  # fmt: skip


def test_a_secret_with_a_newline_never_reaches_the_file():
    with pytest.raises(
        repository.HostError, match="backup_cipher_passphrase is empty or holds whitespace"
    ):
        repository.check_params({**REPO_PARAMS, "backup_cipher_passphrase": "a\n[global]"})


def test_archiving_settings_and_timers():
    params = {**REPO_PARAMS, "postgres_version": 16, "port": 5432,
              "backup_archive_timeout": "60s", "backup_full_schedule": "Sun *-*-* 02:30:00",
              "backup_diff_schedule": "daily"}  # fmt: skip
    assert backup.archive_settings(params) == {
        "archive_mode": "on",
        "archive_command": "'/usr/bin/pgbackrest --stanza=mastodon archive-push %p'",
        "archive_timeout": "'60s'",
    }
    units = backup.unit_files(params)
    assert sorted(units) == [
        "mastodon-data-backup-diff.service",
        "mastodon-data-backup-diff.timer",
        "mastodon-data-backup-full.service",
        "mastodon-data-backup-full.timer",
    ]
    assert "OnCalendar=daily" in units["mastodon-data-backup-diff.timer"].splitlines()
    service = units["mastodon-data-backup-full.service"].splitlines()
    assert "ExecStart=/usr/bin/pgbackrest --stanza=mastodon --type=full backup" in service
    assert "User=postgres" in service
    assert (
        'ExecCondition=/bin/sh -c "/usr/lib/postgresql/16/bin/psql -X -A -t -p 5432 -d postgres '
        "-c 'SELECT pg_is_in_recovery()' | grep -qx f\""
    ) in service


def test_restore_arguments():
    import restore

    assert restore.restore_args({"target_time": ""}) == ["--archive-mode=off", "restore"]
    assert restore.restore_args({"target_time": "2026-11-23 18:04:05.123+00"}) == [
        "--archive-mode=off",
        "--type=time",
        "--target=2026-11-23 18:04:05.123+00",
        "--target-action=promote",
        "restore",
    ]
    with pytest.raises(restore.HostError, match="is not like 2026-11-23 18:04:05"):
        restore.restore_args({"target_time": "yesterday; rm -rf /"})


def test_droplets_mode_makes_a_bucket_and_a_key_for_backups_alone():
    run = run_program({**DROPLETS, **ON}, BACKUP_SECRETS)
    bucket = run.one("/spacesBucket:SpacesBucket", "backups-bucket")
    assert bucket.inputs["name"] == "mastodon-pg-backups" and bucket.inputs["acl"] == "private"
    key = run.one("/spacesKey:SpacesKey", "backups-key")
    assert key.inputs["name"] == "mastodon-data-unit-backups"
    assert key.inputs["grants"] == [{"bucket": "mastodon-pg-backups", "permission": "readwrite"}]
    step = run.one(":remote:Command", "replication-pg18-backup-db-0")
    params = json.loads(step.inputs["stdin"])["params"]
    assert params["backup_access_key_id"] == SPACES_ACCESS_KEY
    assert params["backup_secret_access_key"] == SPACES_SECRET_KEY
    assert params["backup_cipher_passphrase"] == PASSPHRASE
    assert {"backup_key"} <= run.secret_outputs and "backups" not in run.secret_outputs
    assert run.outputs["backups"]["bucket"] == "mastodon-pg-backups"


def test_hosts_mode_uses_the_given_bucket_and_key():
    run = run_program(HOSTS, HOSTS_SECRETS)
    assert run.of_type("/spacesBucket:SpacesBucket") == []
    step = run.one(":remote:Command", "replication-pg18-backup-db1")
    params = json.loads(step.inputs["stdin"])["params"]
    assert (params["backup_access_key_id"], params["backup_secret_access_key"]) == (
        "KEYID123", HOST_KEY_SECRET)  # fmt: skip
    assert run.outputs["backup_key"] == {
        "access_key_id": "KEYID123", "secret_access_key": HOST_KEY_SECRET}  # fmt: skip
    assert "backup_key" in run.secret_outputs
    assert HOST_KEY_SECRET not in json.dumps(run.outputs["backups"])


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_script_imports_with_only_the_files_its_step_ships(script, tmp_path):
    for name, source in plan.script_files(script).items():
        (tmp_path / name).write_text(source)
    result = subprocess.run(
        [sys.executable, "-S", "-E", "-c", f"import {script}"],  # stdlib and these files only
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_the_end_of_an_archived_wal_file_is_where_the_next_one_begins():
    from mastodon_data.cli.check_replication import archived_end, lsn

    segment = 16 * 2**20
    assert archived_end("000000010000000000000003", segment) == lsn("0/4000000")
    assert archived_end("0000000200000001000000FF", segment) == lsn("2/0")


def test_a_pgbackrest_failure_names_its_error_printed_on_stdout():
    """With log-level-console set (the stanza's pgbackrest.conf), pgBackRest 2.55 prints its
    ERROR lines on stdout and nothing on stderr: the step's error must carry them."""
    error = "P00  ERROR: [056]: unable to find primary cluster - cannot proceed"
    result = subprocess.CompletedProcess([], 56, stdout=f"P00   WARN: x\n{error}\n", stderr="")
    assert repository.failure(result, 50) == error[-50:]
    assert repository.failure(subprocess.CompletedProcess([], 3, "", "no repo\n"), 800) == "no repo"
    assert repository.failure(subprocess.CompletedProcess([], 3, "", ""), 800) == "exit code 3"


def test_stanza_create_is_asked_again_while_an_archive_push_holds_the_lock(monkeypatch):
    """stanza-create needs every lock; an async archive-push holds the archive lock while it
    pushes (pgBackRest error 50), as on a new primary: asked again until it gets it; any other
    failure stops the step at once with pgBackRest's error."""
    held = "P00  ERROR: [050]: unable to acquire lock on file 'mastodon-archive.lock'"
    answers = [(50, held), (50, held), (0, "")]
    calls = []

    def pgbackrest(stanza, *args, check=True, timeout=600):
        calls.append(args[0])
        code, out = answers.pop(0) if args[0] == "stanza-create" else (0, "")
        return subprocess.CompletedProcess([], code, stdout=out, stderr="")

    monkeypatch.setattr(backup, "pgbackrest", pgbackrest)
    monkeypatch.setattr(backup.time, "sleep", lambda _: None)
    monkeypatch.setattr(backup, "stanza_info", lambda stanza: {"db": [{"version": "17"}]})
    params = {"stanza": "mastodon", "postgres_version": 17}
    assert backup.ensure_stanza(params) == "checked"
    assert calls == ["stanza-create"] * 3 + ["check"]
    wrong = "P00  ERROR: [056]: unable to find primary cluster - cannot proceed"
    answers[:] = [(56, wrong)]
    with pytest.raises(backup.HostError, match=r"stanza-create failed: .*\[056\]"):
        backup.ensure_stanza(params)


def test_a_stanza_of_the_retired_older_version_is_upgraded_and_another_refused(monkeypatch):
    """After a blue/green upgrade's retirement the new primary meets the stanza the old one
    wrote (PostgreSQL 15): stanza-upgrade carries it to 17. A stanza of the same version or a
    newer one is another cluster's: stanza-create's refusal stands."""
    mismatch = "P00  ERROR: [028]: backup info file or archive info file invalid"
    calls = []

    def pgbackrest(stanza, *args, check=True, timeout=600):
        calls.append(args[0])
        code = 28 if args[0] == "stanza-create" else 0
        return subprocess.CompletedProcess([], code, stdout=mismatch if code else "", stderr="")

    monkeypatch.setattr(backup, "pgbackrest", pgbackrest)
    monkeypatch.setattr(backup, "stanza_info", lambda stanza: {"db": [{"version": "15"}]})
    params = {"stanza": "mastodon", "postgres_version": 17}
    assert backup.ensure_stanza(params) == "upgraded and checked"
    assert calls == ["stanza-create", "stanza-upgrade", "check"]
    calls.clear()
    with pytest.raises(backup.HostError, match=r"stanza-create failed: .*\[028\]"):
        backup.ensure_stanza({**params, "postgres_version": 15})
    assert calls == ["stanza-create"]
