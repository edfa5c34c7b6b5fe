"""The step plan: order, parameters, triggers and the launcher (pure)."""

from __future__ import annotations

import json
import shlex

from mastodon_data import plan
from mastodon_data.config import parse_settings
from tests.fixtures import hosts_stack

HOSTS = hosts_stack(count=4, replicas=2)
SECRETS = {"sshPrivateKey": "k", "replicationPassword": "r" * 20, "dbPassword": "d" * 20}


def plan_for(**changes):
    settings = parse_settings({**HOSTS, **changes}, set(SECRETS))
    return plan.steps(settings.replication, settings.hosts)


def test_primary_first_then_replicas_then_status_for_all():
    steps = plan_for()
    assert [s.name for s in steps] == [
        "primary",
        "replica-db2",
        "replica-db3",
        "slots",
        "status-db1",
        "status-db2",
        "status-db3",
        "pooler-db1",
        "pooler-db2",
        "pooler-db3",
        "health-db1",
        "health-db2",
        "health-db3",
    ]
    assert steps[1].after == ("primary",)
    assert steps[4].after == ("primary", "replica-db2", "replica-db3", "slots")
    # Every other server of the stack may replicate: the replicas and the spare db4.
    assert steps[0].params["replication_peers"] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    # The slot pruning needs the primary only, and no replica waits for it.
    assert steps[3].requires == ("primary",) and steps[3].after == ()
    assert steps[3].host.name == "db1"
    assert steps[3].params == {"postgres_version": 18, "port": 5432, "replicas": ["db2", "db3"]}
    assert {s.params["wal_senders"] for s in steps[:3]} == {10}


def test_adding_a_replica_runs_its_own_step_and_the_slot_pruning_only():
    """A spare turned replica: the primary's and the other replica's steps keep their
    parameters (so their triggers), as long as wal_senders stays the same."""
    before = {s.name: s.params for s in plan_for(replicaCount=1)}
    after = {s.name: s.params for s in plan_for(replicaCount=2)}
    changed = sorted(name for name in after if before.get(name) != after[name])
    assert changed == ["health-db3", "pooler-db3", "replica-db3", "slots", "status-db3"]


def test_wal_senders_grow_past_six_replicas_on_every_server():
    assert [plan.wal_senders(n) for n in (0, 1, 6, 7, 9)] == [10, 10, 10, 11, 13]


def test_a_pooler_step_per_host_after_its_own_step():
    steps = {s.name: s for s in plan_for(pumaProcesses=4, sidekiqThreads=20)}
    assert steps["pooler-db1"].after == ("primary",)
    assert steps["pooler-db3"].after == ("replica-db3",)
    assert steps["pooler-db2"].params == {
        "postgres_version": 18,
        "port": 5432,
        "private_address": "10.0.0.2",
        "primary_address": "10.0.0.1",
        "db_name": "mastodon_production",
        "read_db_name": "mastodon_production_replica",
        "db_user": "mastodon",
        "pgbouncer_port": 6432,
        "pool_size": 4 * 5 + 20 + 10,
        "pgbouncer_max_client_conn": 1000,
        "pgbouncer_open_files": 4096,
        "monitor_user": "",
        "primary_ca_cert": "",
    }
    # It trusts the primary's CA: DB_NAME goes there.
    assert steps["pooler-db2"].report_inputs == (("primary_ca_cert", "primary", "ca_cert"),)
    assert steps["pooler-db2"].secret_params == {"db_password": "dbPassword"}
    payload = plan.payload(steps["pooler-db2"], steps["pooler-db2"].params, SECRETS)
    assert payload["params"]["db_password"] == "d" * 20
    assert set(payload["files"]) == {"common.py", "pooler.py", "tls.py"}
    # Every server's PostgreSQL lets every server's pool in (pg_hba): any of them may be the
    # primary that DB_NAME reaches; the spare too (it may become a replica, then the primary).
    everyone = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert steps["primary"].params["pool_peers"] == everyone
    assert steps["replica-db3"].params["pool_peers"] == everyone
    assert steps["primary"].params["max_connections"] == 100


def test_no_pooler_step_without_pgbouncer():
    steps = plan_for(pgbouncer=False)
    assert [s.name for s in steps if s.script == "pooler"] == []
    assert steps[0].params["pool_peers"] == []


def test_spare_hosts_are_not_used():
    assert "replica-db4" not in [s.name for s in plan_for()]


def replica_trigger(**changes) -> str:
    step = plan_for(**changes)[1]
    return step.trigger(step.params, step.trigger_inputs)


def test_trigger_follows_non_secret_parameters_and_own_scripts(monkeypatch):
    base = replica_trigger()
    assert replica_trigger() == base  # stable
    assert replica_trigger(walKeepSize="2GB") != base
    real = plan.script_files

    def edited(name):
        return lambda script: (
            {**real(script), name: "changed"} if name in real(script) else real(script)
        )

    for shipped in ("replica.py", "standby.py", "tls.py", "common.py"):
        monkeypatch.setattr(plan, "script_files", edited(shipped))
        assert replica_trigger() != base, shipped
    monkeypatch.setattr(plan, "script_files", edited("promote.py"))
    assert replica_trigger() == base  # another role's script


def test_secrets_only_in_the_payload_never_in_params_or_command():
    for step in plan_for():
        visible = json.dumps(step.params) + plan.command_line("admin")
        for value in (SECRETS["replicationPassword"], SECRETS["dbPassword"]):
            assert value not in visible
    primary, replica = plan_for()[:2]
    assert plan.payload(primary, primary.params, SECRETS)["params"]["db_password"] == "d" * 20
    assert "db_password" not in plan.payload(replica, replica.params, SECRETS)["params"]
    files = set(plan.payload(replica, replica.params, SECRETS)["files"])
    assert files == {"common.py", "replica.py", "standby.py", "tls.py"}  # what the step runs


def test_launcher_runs_as_root_or_through_sudo():
    assert plan.command_line("root").startswith("python3 -c ")
    assert plan.command_line("admin").startswith("sudo -n python3 -c ")
    assert shlex.split(plan.command_line("root"))[2] == plan.LAUNCHER


def test_reseed_is_asked_per_replica():
    settings = parse_settings(HOSTS, set(SECRETS))
    steps = plan.steps(settings.replication, settings.hosts, reseed=frozenset({"db3"}))
    assert steps[1].params["reseed"] is False and steps[2].params["reseed"] is True


def test_replicas_take_the_primary_ca_from_its_report():
    replica = plan_for()[1]
    assert replica.report_sources == ("primary",)
    filled = replica.fill_reports(replica.params, ['progress\n{"ca_cert": "PEM", "changed": []}\n'])
    assert filled == {**replica.params, "primary_ca_cert": "PEM"}
    assert replica.params["primary_ca_cert"] == ""  # until the primary step reported
    assert plan.parse_report("") == {}
