"""A new replica at the floor (its standby settings written into the copy, initdb's files from
the package samples, a start without pg_ctlcluster's probe loop), fast reconnection (TCP
keepalives and timeouts) and honest lag (`mastodon-data check-replication`). Pure parts only;
the lab test tests/lab/test_lag_and_reconnect.py runs them for real."""

from __future__ import annotations

import common
import pytest
import standby

from mastodon_data import plan
from mastodon_data.cli import check_replication
from mastodon_data.config import ConfigError, parse_settings
from tests.fixtures import DROPLETS, REPLICA_PARAMS, SECRETS, hosts_stack

PARAMS = REPLICA_PARAMS
CONNINFO = (
    "host=10.0.0.1 port=5432 user=replicator application_name=db2 sslmode=verify-full "
    "sslrootcert=/var/lib/postgresql/primary-ca.crt connect_timeout=10 keepalives=1 "
    "keepalives_idle=7 keepalives_interval=1 keepalives_count=3 tcp_user_timeout=10000 "
    "passfile=/var/lib/postgresql/.pgpass"
)


# --- fast reconnection ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "ms"), [("500ms", 500), ("10s", 10000), ("2min", 120000), ("0s", 0)]
)
def test_durations_in_postgresql_units(text, ms):
    assert common.duration_ms(text) == ms


@pytest.mark.parametrize("text", ["10", "10 s", "1h", "1.5s", ""])
def test_durations_without_a_known_unit_are_refused(text):
    with pytest.raises(common.HostError, match="not a duration"):
        common.duration_ms(text)


@pytest.mark.parametrize(
    ("timeout", "idle", "interval", "user_timeout"),
    [("10s", 7, 1, 10000), ("60s", 30, 10, 60000), ("3s", 1, 1, 3000), ("1500ms", 1, 1, 1500)],
)
def test_keepalives_give_up_within_the_replication_timeout(timeout, idle, interval, user_timeout):
    options = common.keepalive_options(timeout)
    assert options == {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": 3,
        "tcp_user_timeout": user_timeout,
    }


def test_replication_connection_carries_keepalives_and_the_user_timeout():
    assert standby.conninfo(PARAMS) == CONNINFO
    assert standby.upstream(PARAMS) == {
        "primary_conninfo": CONNINFO,
        "primary_slot_name": "mdata_db2",
    }


def test_both_ends_time_out_a_dead_link_and_the_replica_retries_every_second():
    params = {
        "private_address": "10.0.0.2",
        "wal_keep_size": "1GB",
        "max_slot_wal_keep_size": "10GB",
        "replication_timeout": "15s",
        "wal_retrieve_retry_interval": "2s",
        "max_connections": 100,
        "wal_senders": 10,
    }
    settings = common.server_settings(common.Cluster(15), params)
    assert settings["wal_sender_timeout"] == "'15s'"
    assert settings["wal_receiver_timeout"] == "'15s'"
    assert settings["wal_retrieve_retry_interval"] == "'2s'"


def settings_with(**changes):
    return parse_settings({**DROPLETS, **changes}, set(SECRETS))


def test_reconnection_settings_default_to_10s_and_1s_and_reach_every_step():
    settings = parse_settings(hosts_stack(3, 2), set(SECRETS))
    replication = settings.replication
    assert (replication.replication_timeout, replication.wal_retrieve_retry_interval) == (
        "10s",
        "1s",
    )
    for step in plan.steps(replication, settings.hosts):
        if step.script in ("primary", "replica"):
            assert step.params["replication_timeout"] == "10s", step.name
            assert step.params["wal_retrieve_retry_interval"] == "1s", step.name


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("replicationTimeout", "3s"),
        ("replicationTimeout", "60min"),
        ("replicationTimeout", "3500ms"),  # rounded up to whole seconds for the keepalives
        ("walRetrieveRetryInterval", "100ms"),
        ("walRetrieveRetryInterval", "5min"),
    ],
)
def test_reconnection_settings_accepted_at_their_limits(key, value):
    settings = settings_with(**{key: value})
    field = "replication_timeout" if key == "replicationTimeout" else "wal_retrieve_retry_interval"
    assert getattr(settings.replication, field) == value


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [
        ("replicationTimeout", "10", "not a duration like 10s (units ms, s, min)"),
        ("replicationTimeout", "10S", "not a duration like 10s (units ms, s, min)"),
        ("replicationTimeout", "1h", "not a duration like 10s (units ms, s, min)"),
        ("replicationTimeout", "0s", "not from 3s to 60min"),
        ("replicationTimeout", "2999ms", "not from 3s to 60min"),
        ("replicationTimeout", "61min", "not from 3s to 60min"),
        ("walRetrieveRetryInterval", "99ms", "not from 100ms to 5min"),
        ("walRetrieveRetryInterval", "301s", "not from 100ms to 5min"),
    ],
)
def test_reconnection_settings_refused_with_the_key_and_the_fix(key, value, what):
    default = {"replicationTimeout": "10s", "walRetrieveRetryInterval": "1s"}[key]
    with pytest.raises(ConfigError) as error:
        settings_with(**{key: value})
    assert str(error.value) == (
        f"mastodon-data:{key} = '{value}': {what}. "
        f"Fix: pulumi config set mastodon-data:{key} {default}"
    )


# --- seed at the floor ------------------------------------------------------------------------
def test_standby_settings_replace_those_of_the_primarys_copy():
    copied = (
        "# Do not edit this file manually!\n"
        "# It will be overwritten by the ALTER SYSTEM command.\n"
        "work_mem = '8MB'\n"
        "primary_conninfo = 'host=old user=replicator'\n"
        "primary_slot_name = 'mdata_old'\n"
    )
    assert standby.with_upstream(copied, standby.upstream(PARAMS)) == (
        "# Do not edit this file manually!\n"
        "# It will be overwritten by the ALTER SYSTEM command.\n"
        "work_mem = '8MB'\n"
        f"primary_conninfo = '{CONNINFO}'\n"
        "primary_slot_name = 'mdata_db2'\n"
    )


def test_standby_settings_in_an_empty_file_and_quotes_doubled_as_alter_system_does():
    assert standby.with_upstream("", {"primary_conninfo": "a='b'"}) == (
        standby.AUTO_CONF_HEADER + "primary_conninfo = 'a=''b'''\n"
    )


def test_written_standby_settings_are_what_a_rerun_wants():
    once = standby.with_upstream("", standby.upstream(PARAMS))
    assert standby.with_upstream(once, standby.upstream(PARAMS)) == once
    assert common.read_conf_text(once) == standby.upstream(PARAMS)


SAMPLE_CONF = """# comment
#max_connections = 100\t\t\t# (change requires restart)
#shared_buffers = 128MB\t\t\t# min 128kB
#datestyle = 'iso, mdy'
#timezone = 'GMT'
#lc_messages = 'C'\t\t\t# locale for system error message
#default_text_search_config = 'pg_catalog.simple'
"""


def test_postgresql_conf_from_the_sample_with_values_set_in_place():
    conf = standby.initial_postgresql_conf(
        SAMPLE_CONF,
        {
            "max_connections": "200",
            "shared_buffers": "128MB",
            "datestyle": "ISO, MDY",
            "timezone": "Etc/UTC",
            "lc_messages": "C.UTF-8",
            "default_text_search_config": "pg_catalog.english",
            "min_wal_size": "80MB",
        },
    )
    assert conf == (
        "# comment\n"
        "max_connections = 200\t\t\t# (change requires restart)\n"
        "shared_buffers = 128MB\t\t\t# min 128kB\n"
        "datestyle = 'ISO, MDY'\n"
        "timezone = 'Etc/UTC'\n"
        "lc_messages = 'C.UTF-8'\t\t\t# locale for system error message\n"
        "default_text_search_config = 'pg_catalog.english'\n"
        "min_wal_size = 80MB\n"
    )


def test_pg_hba_as_initdb_writes_it_for_peer_and_scram():
    sample = (
        "@authcomment@\n"
        "local   all   all                  @authmethodlocal@\n"
        "host    all   all   127.0.0.1/32   @authmethodhost@\n"
        "@remove-line-for-nolocal@local   replication   all   @authmethodlocal@\n"
    )
    assert standby.initial_hba(sample) == (
        "\n"
        "local   all   all                  peer\n"
        "host    all   all   127.0.0.1/32   scram-sha-256\n"
        "local   replication   all   peer\n"
    )
    assert standby.initial_hba(None) == standby.DEFAULT_HBA


def test_a_start_is_pg_ctl_wait_with_pg_ctlclusters_environment(tmp_path, monkeypatch):
    cluster = common.Cluster(15)
    monkeypatch.setattr(cluster, "confdir", tmp_path)
    (tmp_path / "environment").write_text("# comment\nTZ = 'Etc/UTC'\n")
    (tmp_path / "postgresql.conf").write_text("lc_messages = 'C.UTF-8'\t# locale\n")
    (tmp_path / "pg_ctl.conf").write_text("pg_ctl_options = '--core-files'\n")
    assert cluster.start_argv() == [
        "sh",
        "-c",
        '{ echo -900 > /proc/self/oom_score_adj; } 2>/dev/null; exec "$@"',
        "sh",
        "runuser",
        "-u",
        "postgres",
        "--",
        "env",
        "-i",
        "LANG=C.UTF-8",
        "PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj",
        "TZ=Etc/UTC",
        "/usr/lib/postgresql/15/bin/pg_ctl",
        "start",
        "-w",
        "-t",
        "300",
        "-D",
        "/var/lib/postgresql/15/main",
        "-l",
        "/var/log/postgresql/postgresql-15-main.log",
        "--core-files",
        "-s",
        "-o",
        f'-c config_file="{tmp_path}/postgresql.conf"',
    ]


def test_under_systemd_the_start_goes_through_pg_ctlcluster(monkeypatch):
    calls = []
    monkeypatch.setattr(common, "systemd_running", lambda: True)
    monkeypatch.setattr(common.Cluster, "running", lambda self: False)
    monkeypatch.setattr(common, "run", lambda argv, **kw: calls.append(argv))
    assert common.Cluster(15).start() is True
    assert calls == [["pg_ctlcluster", "15", "main", "start"]]


def test_without_systemd_the_start_is_pg_ctl(monkeypatch):
    calls = []
    monkeypatch.setattr(common, "systemd_running", lambda: False)
    monkeypatch.setattr(common.Cluster, "running", lambda self: False)
    monkeypatch.setattr(common.Cluster, "pg_ctl_start", lambda self: calls.append("pg_ctl"))
    assert common.Cluster(15).start() is True
    assert calls == ["pg_ctl"]


# --- honest lag ------------------------------------------------------------------------------
def test_wal_positions_compare_as_numbers():
    assert check_replication.lsn("0/A0000000") == 0xA0000000
    assert check_replication.lsn("1/0") == 1 << 32
    assert check_replication.lsn("1/0") > check_replication.lsn("0/FFFFFFFF")
    assert check_replication.lsn(None) is None


@pytest.mark.parametrize(
    ("primary", "receive", "replay", "expected"),
    [
        ("0/3000148", "0/3000148", "0/3000148", True),  # all replayed, nothing newer
        ("0/3000148", "0/3000200", "0/3000200", True),  # the primary's view is older
        ("0/3000148", None, "0/3000148", True),  # replayed from pg_wal, receiver restarting
        ("0/3000200", "0/3000148", "0/3000148", False),  # the primary has newer WAL
        ("0/3000148", "0/3000200", "0/3000148", False),  # received, not yet replayed
        ("0/9000000", "0/3000148", "0/10000000", True),  # 0/10000000 > 0/9000000
        ("0/3000148", None, None, False),
    ],
)
def test_caught_up_means_replayed_all_received_and_nothing_newer(
    primary, receive, replay, expected
):
    assert check_replication.caught_up(primary, receive, replay) is expected


def test_lag_seconds_zero_when_caught_up_whatever_the_last_commits_age():
    assert check_replication.seconds_behind(True, None, 42.0, 0.0) == 0.0


def test_lag_seconds_is_the_time_taken_to_replay_the_checks_position():
    assert check_replication.seconds_behind(False, 0.25, 10.3, 0.3) == 0.25


def test_lag_seconds_from_the_primarys_replay_lag_and_at_least_the_wait():
    assert check_replication.seconds_behind(False, None, 12.5, 1.0) == 12.5
    assert check_replication.seconds_behind(False, None, 0.14, 1.0) == 1.0
    assert check_replication.seconds_behind(False, None, None, 1.0) == 1.0


def test_lag_seconds_unknown_for_a_replica_not_streaming():
    assert check_replication.seconds_behind(False, None, None, 0.0) is None
