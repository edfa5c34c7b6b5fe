"""Replication on the test lab: `pulumi up` of a hosts-mode stack through the real engine (the
host scripts as remote.Commands over real ssh); tests of one host script run it alone over ssh
(mastodon_data/cli/host_ssh.py). The tests build on each other, top to bottom."""

from __future__ import annotations

import json
import subprocess
import time

import psycopg
import pytest
from labkit import run_one_step

from lab import namespaces as lab_hosts
from mastodon_data import plan
from mastodon_data.cli import check_replication, host_ssh
from mastodon_data.pulumi_cli import PulumiFailed
from tests.fixtures import COMMAND

pytestmark = pytest.mark.lab
WAIT = 15  # seconds for a row to reach a replica


def apply(session, replica_count: int, reseed: tuple[str, ...] = ()) -> dict:
    return session.apply(replica_count, reseed)


def reports(outputs: dict) -> dict:
    return outputs["steps"]


def connect(outputs: dict, host: str) -> psycopg.Connection:
    """Connects exactly as the replication check does: Mastodon's credentials, PostgreSQL's
    own port (past the host's pool)."""
    return check_replication.connect(check_replication.direct_env(outputs), host)


@pytest.fixture(scope="module")
def first_run(lab_session):
    outputs = apply(lab_session, 2)
    lab_session.ca_cert = outputs["postgres_ca_cert"]  # for steps run one by one below
    return outputs


def test_primary_and_two_replicas_stream_with_active_slots(first_run):
    primary = first_run["replication"]["mlabt-h1"]
    assert primary["role"] == "primary"
    assert sorted(r["application_name"] for r in primary["replicas"]) == ["mlabt-h2", "mlabt-h3"]
    assert all(r["state"] == "streaming" for r in primary["replicas"])
    slots = {s["slot_name"]: s for s in primary["slots"]}
    assert set(slots) == {"mdata_mlabt_h2", "mdata_mlabt_h3"}
    assert all(s["active"] for s in slots.values())
    for name in ("mlabt-h2", "mlabt-h3"):
        replica = first_run["replication"][name]
        assert replica["role"] == "replica"
        assert replica["receiver"][0]["status"] == "streaming"
        assert replica["system_identifier"] == primary["system_identifier"]


def test_env_points_at_primary_and_first_replica(first_run):
    env = first_run["mastodon_env"]
    assert env["DB_HOST"] == first_run["primary"]["private_address"] == "10.252.0.11"
    assert env["REPLICA_DB_HOST"] == "10.252.0.12"
    assert env["DB_SSLMODE"] == "require"


def test_row_written_on_primary_reaches_every_replica(first_run):
    marker = f"row-{time.time_ns()}"
    with connect(first_run, "10.252.0.11") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS probe (note text)")
        conn.execute("INSERT INTO probe VALUES (%s)", (marker,))
    for host in ("10.252.0.12", "10.252.0.13"):
        deadline, found = time.monotonic() + WAIT, False
        with connect(first_run, host) as conn:
            while not found and time.monotonic() < deadline:
                try:
                    found = (
                        conn.execute(
                            "SELECT count(*) FROM probe WHERE note = %s", (marker,)
                        ).fetchone()[0]
                        == 1
                    )
                except psycopg.errors.UndefinedTable:  # the CREATE TABLE has not arrived yet
                    pass
                time.sleep(0.2)
        assert found, f"{marker} did not reach {host} within {WAIT} s"


def test_replicas_refuse_writes(first_run):
    for host in ("10.252.0.12", "10.252.0.13"):
        with connect(first_run, host) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO probe VALUES ('must fail')")


def test_app_connections_without_tls_are_refused(first_run):
    env = check_replication.direct_env(first_run)
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry"):
        psycopg.connect(
            host="10.252.0.11",
            port=env["DB_PORT"],
            dbname=env["DB_NAME"],
            user=env["DB_USER"],
            password=env["DB_PASS"],
            sslmode="disable",
            connect_timeout=5,
        )


def test_a_spare_host_gets_no_replication_and_the_app_role_only_with_its_password(
    lab_session, first_run
):
    # h4 is a spare, not in postgresAllowedSources. Every host of `hosts` may run a pool that
    # logs in as the app's role (so a spare turned replica changes no other server's pg_hba):
    # TLS and SCRAM, so without the password it is refused. Replication: no entry at all.
    refusals = {
        "mastodon_production": "fe_sendauth: no password supplied",
        "replication": 'no pg_hba.conf entry for replication connection from host "10.252.0.14"',
    }
    for dbname, refusal in refusals.items():
        extra = " replication=true" if dbname == "replication" else ""
        result = lab_session.ssh(
            4,
            f"runuser -u postgres -- psql -X -w 'host=10.252.0.11 dbname={dbname} user=mastodon "
            f"sslmode=require connect_timeout=5{extra}' -c 'SELECT 1'",
            check=False,
        )
        assert result.returncode != 0
        assert refusal in result.stderr, result.stderr


def test_remote_connections_need_tls_and_scram(lab_session, first_run):
    for index in (1, 2, 3):
        hba = lab_session.ssh(index, "cat /etc/postgresql/15/main/pg_hba.conf").stdout
        rules = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
        remote = [r for r in rules if r[0].startswith("host")]
        for rule in remote:
            assert rule[-1] == "scram-sha-256", f"h{index}: {' '.join(rule)}"
            loopback = rule[3] in ("127.0.0.1/32", "::1/128")
            assert rule[0] == "hostssl" or loopback, f"h{index}: {' '.join(rule)}"
        # So no trust, md5 or password method for anything that comes over the network.


def test_unreachable_host_and_wrong_ssh_key_are_clear_errors(lab_session, first_run, tmp_path):
    config = lab_hosts.stack_config(lab_session.lab, 2, 4)
    with pytest.raises(host_ssh.StepFailed, match=r"ssh to root@10.252.0.99:22 failed"):
        run_one_step(
            config,
            lab_session.secrets,
            "primary",
            tmp_path,
            host_change={"public_address": "10.252.0.99"},
        )
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong_key = {**lab_session.secrets, "sshPrivateKey": other.read_text()}
    with pytest.raises(host_ssh.StepFailed, match="Permission denied"):
        run_one_step(config, wrong_key, "primary", tmp_path)


def test_no_secret_in_step_output_logs_or_files(lab_session, first_run):
    outputs = apply(lab_session, 2, reseed=("mlabt-h3",))  # every step runs; output captured
    run = lab_session.stack.last
    printed = run.stdout + run.stderr
    steps = json.dumps(outputs["steps"]) + json.dumps(outputs["replication"])
    values = [lab_session.secrets["replicationPassword"], lab_session.secrets["dbPassword"]]
    for value in values:
        assert value not in printed + steps
    for index in (1, 2, 3):
        # The secrets go to grep on stdin, not on a command line.
        argv = lab_session.lab.ssh_command(
            lab_session.lab.host(index).address,
            # Logs, configuration, the launcher's scratch space and the whole cluster, WAL included.
            "grep -rlF -f /dev/stdin /var/log/postgresql /etc/postgresql /tmp/mastodon-data-* "
            "/var/lib/postgresql "
            "--exclude=.pgpass; "
            "stat -c %a /var/lib/postgresql/.pgpass 2>/dev/null || true",
        )
        result = subprocess.run(
            argv, input="\n".join(values) + "\n", capture_output=True, text=True, timeout=60
        )
        found = [line for line in result.stdout.split() if line.startswith("/")]
        assert found == [], f"h{index}: a secret in {found}"
        if index > 1:
            assert result.stdout.split()[-1] == "600"  # the replication password's only home


def test_pinned_host_keys_are_checked(lab_session, first_run, tmp_path):
    config = lab_hosts.stack_config(lab_session.lab, 2, 4)
    assert run_one_step(config, lab_session.secrets, "primary", tmp_path)
    h2_key = lab_hosts.host_key(lab_session.lab.host(2))
    with pytest.raises(host_ssh.StepFailed, match="Host key verification failed"):
        run_one_step(
            config, lab_session.secrets, "primary", tmp_path, host_change={"host_key": h2_key}
        )


def test_replication_check_passes(first_run):
    result = subprocess.run(
        [COMMAND, "check-replication"],
        input=json.dumps(first_run),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mlabt-h2: replica, streaming" in result.stdout
    assert first_run["mastodon_env"]["DB_PASS"] not in result.stdout + result.stderr


def test_second_run_changes_nothing(lab_session, first_run):
    apply(lab_session, 2)  # the configuration without the re-seed of the test above
    lab_session.stack.preview("--expect-no-changes")
    second = apply(lab_session, 2)
    # Thirteen steps (primary, two replicas, the slots step, a status, a pooler and a health
    # endpoint per host), their component and the stack.
    assert lab_session.stack.last_changes() == {"same": 15}
    for name in ("mlabt-h2", "mlabt-h3"):
        before, after = first_run["replication"][name], second["replication"][name]
        assert after["system_identifier"] == before["system_identifier"]
    # h2 was never touched again (h3 was re-seeded above).
    before, after = first_run["replication"]["mlabt-h2"], second["replication"]["mlabt-h2"]
    assert after["postmaster_start_time"] == before["postmaster_start_time"]


def test_wrong_replication_password_is_a_clear_error(lab_session, first_run):
    config = lab_hosts.stack_config(lab_session.lab, 2, 4)
    wrong = {**lab_session.secrets, "replicationPassword": "not-the-right-password-at-all"}
    step, workdir, ca = "replica-mlabt-h2", lab_session.workdir, lab_session.ca_cert
    try:
        with pytest.raises(host_ssh.StepFailed, match="rejected the password") as failure:
            run_one_step(config, wrong, step, workdir, ca)
        assert wrong["replicationPassword"] not in str(failure.value)
    finally:
        # The right password again (the failed run left the wrong one in .pgpass).
        again = run_one_step(config, lab_session.secrets, step, workdir, ca)
        assert plan.parse_report(again)["changed"] == ["pgpass written"]


def test_apps_can_verify_the_primary_with_the_exported_ca(first_run, tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text(first_run["postgres_ca_cert"])
    env = first_run["mastodon_env"]
    with psycopg.connect(
        host=env["DB_HOST"],
        port=env["DB_PORT"],
        dbname=env["DB_NAME"],
        user=env["DB_USER"],
        password=env["DB_PASS"],
        sslmode="verify-full",
        sslrootcert=str(ca),
        connect_timeout=5,
    ) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[
            0
        ]


def test_replica_refuses_a_primary_presenting_another_certificate(lab_session, first_run):
    conf = "/etc/postgresql/15/main"
    lab_session.ssh(
        1,
        f"cp -p {conf}/server.crt /root/good.crt && cp -p {conf}/server.key /root/good.key && "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
        f"-subj /CN=10.252.0.11 -addext subjectAltName=IP:10.252.0.11 -keyout {conf}/server.key "
        f"-out {conf}/server.crt 2>/dev/null && pg_ctlcluster 15 main reload",
    )
    try:
        with pytest.raises(host_ssh.StepFailed, match="not issued by this stack's CA"):
            apply_only_replica(lab_session, "mlabt-h2", replica_count=2)
    finally:
        lab_session.ssh(
            1,
            f"cp -p /root/good.crt {conf}/server.crt && cp -p /root/good.key {conf}/server.key "
            "&& pg_ctlcluster 15 main reload && rm /root/good.crt /root/good.key",
        )


def test_primary_down_during_replica_setup_then_rerun_completes(lab_session, first_run):
    lab_session.ssh(1, "pg_ctlcluster 15 main stop -m fast")
    try:
        with pytest.raises(host_ssh.StepFailed, match="not reachable"):
            # The primary step itself fails first when the primary is down: start it only
            # once the failure of a replica step has been seen.
            apply_only_replica(lab_session, "mlabt-h4", replica_count=3)
    finally:
        lab_session.ssh(1, "pg_ctlcluster 15 main start")


def test_more_replicas_by_rerun_without_recloning_the_others(lab_session, first_run):
    # The operator's postgresAllowedSources (the app's network) stays as it was.
    third = lab_session.apply(3, sources_for=3)
    steps = reports(third)
    # (pgpass and CA may have been written by the failed run of the test above)
    assert steps["replica-mlabt-h4"]["changed"][-3:] == [
        "slot mdata_mlabt_h4 created",
        "cloned",
        "server started",
    ]
    # The spare turned replica runs its own steps (replica, status, pooler, health) and the slot
    # pruning; the primary's and the other replicas' steps do not run, and the reports are read
    # again.
    assert lab_session.stack.last_changes() == {"create": 4, "replace": 4, "same": 11}
    for name in ("mlabt-h2", "mlabt-h3"):
        before, after = first_run["replication"][name], third["replication"][name]
        assert after["postmaster_start_time"] == before["postmaster_start_time"]
    assert third["replication"]["mlabt-h4"]["receiver"][0]["status"] == "streaming"
    assert len(third["replication"]["mlabt-h1"]["slots"]) == 3


def test_replica_of_another_primary_is_refused_unless_reseeded(lab_session):
    # h4 becomes a primary of its own (another system identifier) ...
    lab_session.ssh(
        4,
        "pg_ctlcluster 15 main stop -m fast && rm -rf /etc/postgresql/15/main "
        "/var/lib/postgresql/15/main && pg_createcluster 15 main --start "
        ">/dev/null && runuser -u postgres -- createdb precious",
    )
    with pytest.raises(PulumiFailed, match="another primary"):
        lab_session.stack.rerun("replica-mlabt-h4")  # what an operator runs after a change
    databases = lab_session.psql(4, "SELECT datname FROM pg_database", db="postgres").stdout
    assert "precious" in databases
    reseeded = reports(apply(lab_session, 3, reseed=("mlabt-h4",)))
    assert "re-seeded (other primary)" in reseeded["replica-mlabt-h4"]["changed"]


def apply_only_replica(session, name: str, replica_count: int) -> str:
    config = lab_hosts.stack_config(session.lab, replica_count, 4)
    return run_one_step(
        config, session.secrets, f"replica-{name}", session.workdir, session.ca_cert
    )


def test_fewer_replicas_drop_the_removed_ones_slot_while_it_streams(lab_session):
    # h4 streams (re-seeded above) and, a spare again, may still connect: its walsender is
    # ended and its slot dropped all the same, so it holds no WAL.
    before = lab_session.psql(1, "SELECT slot_name FROM pg_replication_slots WHERE active")
    assert "mdata_mlabt_h4" in before.stdout
    outputs = apply(lab_session, 2)
    slots = reports(outputs)["slots"]
    assert slots["changed"] == ["slot mdata_mlabt_h4 dropped (replica no longer configured)"]
    names = sorted(s["slot_name"] for s in outputs["replication"]["mlabt-h1"]["slots"])
    assert names == ["mdata_mlabt_h2", "mdata_mlabt_h3"]
