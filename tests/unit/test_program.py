"""The Pulumi program on mocks: every mode's resources and their wiring, firewall invariants,
the outputs, and secrets kept off command lines."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pulumi
import pytest
from program_harness import CA_CERT, SECRETS, run_program

from mastodon_data import monitoring
from mastodon_data.config import parse_settings
from tests.fixtures import DROPLETS, hosts_stack

HOSTS = hosts_stack(count=3, replicas=2)


def stdin_of(command) -> dict:
    return json.loads(command.inputs["stdin"])


@pytest.fixture(scope="module")
def droplets():
    return run_program(DROPLETS)


def test_droplets_mode_makes_vpc_droplets_and_one_firewall(droplets):
    (vpc,) = droplets.of_type("/vpc:Vpc")
    assert vpc.inputs["ipRange"] == "10.118.0.0/20" and vpc.inputs["region"] == "nyc3"
    by_name = {d.name: d for d in droplets.of_type("/droplet:Droplet")}
    primary, replica = by_name["db-pg18-0"], by_name["db-pg18-1"]
    for droplet in (primary, replica):
        assert droplet.inputs["monitoring"] is True
        assert droplet.inputs["vpcUuid"] == "network-vpc-id"  # the PrivateNetwork's
        assert droplet.inputs["sshKeys"] == ["12345"]
        assert droplet.inputs["image"] == "ubuntu-24-04-x64"
        assert droplet.inputs["tags"] == ["mastodon-data-unit-db"]  # one tag, not the role
    assert primary.inputs["name"] == "mastodon-db-unit-0"
    assert replica.inputs["name"] == "mastodon-db-unit-1"
    (firewall,) = droplets.of_type("/firewall:Firewall")
    assert sorted(firewall.inputs["dropletIds"]) == [1001, 1002]


def test_firewall_opens_5432_and_the_pools_only_privately_and_22_only_to_admins(droplets):
    (firewall,) = droplets.of_type("/firewall:Firewall")
    for rule in firewall.inputs["inboundRules"]:
        sources = rule.get("sourceAddresses", [])
        assert "0.0.0.0/0" not in sources and "::/0" not in sources
        if rule["portRange"] == "22":
            assert sources == ["198.51.100.7/32"]
        else:
            assert rule["portRange"] in ("5432", "6432", "8008")
            assert all(ipaddress.ip_network(s).is_private for s in sources)
    ports = sorted(r["portRange"] for r in firewall.inputs["inboundRules"])
    # app sources, the replicas by tag, the pools, the replica health endpoint
    assert ports == ["22", "5432", "5432", "6432", "8008"]
    assert {
        "protocol": "tcp",
        "portRange": "8008",
        "sourceAddresses": ["10.118.0.0/20"],  # the VPC only, whatever the allowed sources
    } in (firewall.inputs["inboundRules"])
    assert {
        "protocol": "tcp",
        "portRange": "6432",
        "sourceAddresses": ["10.118.0.0/20"],  # the VPC: postgresAllowedSources' default
    } in (firewall.inputs["inboundRules"])
    assert {
        "protocol": "tcp",
        "portRange": "5432",
        "sourceTags": ["mastodon-data-unit-db"],
    } in (firewall.inputs["inboundRules"])
    outbound = {(r["protocol"], r["portRange"]) for r in firewall.inputs["outboundRules"]}
    assert outbound == {
        ("udp", "53"),
        ("tcp", "53"),
        ("tcp", "80"),
        ("tcp", "443"),
        ("udp", "123"),
        ("tcp", "5432"),
    }


def test_commands_reach_droplets_and_carry_secrets_only_on_stdin(droplets):
    commands = {c.name: c for c in droplets.of_type("remote:Command")}
    assert set(commands) == {
        "replication-pg18-volume-db-0",
        "replication-pg18-volume-db-1",
        "replication-pg18-primary",
        "replication-pg18-replica-db-1",
        "replication-pg18-slots",
        "replication-pg18-status-db-0",
        "replication-pg18-status-db-1",
        "replication-pg18-pooler-db-0",
        "replication-pg18-pooler-db-1",
        "replication-pg18-health-db-0",
        "replication-pg18-health-db-1",
    }
    health = stdin_of(commands["replication-pg18-health-db-1"])["params"]
    assert health == {
        "postgres_version": 18,
        "port": 5432,
        "private_address": "10.118.0.3",
        "replica_health_port": 8008,
        "replica_max_lag_bytes": 16777216,
        "replica_max_lag_seconds": 30,
    }
    pooler = stdin_of(commands["replication-pg18-pooler-db-1"])["params"]
    assert pooler["private_address"] == "10.118.0.3" and pooler["pgbouncer_port"] == 6432
    assert pooler["db_password"] == SECRETS["dbPassword"]  # on stdin only (checked below)
    primary = commands["replication-pg18-primary"]
    assert primary.inputs["connection"]["host"] == "203.0.113.1"
    assert primary.inputs["connection"]["privateKey"] == SECRETS["sshPrivateKey"]
    params = stdin_of(primary)["params"]
    assert params["replication_peers"] == ["10.118.0.3"]
    assert stdin_of(commands["replication-pg18-slots"])["params"]["replicas"] == ["db-1"]
    assert params["db_password"] == SECRETS["dbPassword"]
    replica = stdin_of(commands["replication-pg18-replica-db-1"])["params"]
    assert replica["primary_address"] == "10.118.0.2"
    assert replica["replication_password"] == SECRETS["replicationPassword"]
    assert "db_password" not in replica  # a replica never needs the app's password
    assert replica["primary_ca_cert"] == CA_CERT  # from the primary step's report
    for command in commands.values():
        visible = json.dumps({k: v for k, v in command.inputs.items() if k != "stdin"})
        for secret in ("replicationPassword", "dbPassword"):
            assert SECRETS[secret] not in visible, f"{secret} outside stdin of {command.name}"
        assert command.inputs["addPreviousOutputInEnv"] is False
        assert {"stdin", "connection"} <= command.secret_inputs  # encrypted in the state


def test_destroy_leaves_data_in_place_and_says_so():
    run = run_program(HOSTS)
    for command in run.of_type("remote:Command"):
        delete = command.inputs.get("delete")
        if command.name.startswith(("replication-pg18-status-", "replication-pg18-slots")):
            assert delete is None
            continue
        running = ("replication-pg18-pooler-", "replication-pg18-health-")
        kept = "left running" if command.name.startswith(running) else "left in place"
        assert delete.startswith("cat >/dev/null; echo ") and kept in delete
        for destructive in ("rm ", "drop", "pg_dropcluster", "DROP", "apt-get"):
            assert destructive not in delete


def test_each_delete_reads_its_whole_stdin_before_its_note(tmp_path):
    """A step's delete gets the step's payload on stdin too; one that exits without reading it
    lets sshd close the channel while pulumi-command still writes, and fails with `EOF` (issue
    24). Each delete runs on its command's stdin as a file: the offset it shares with the
    command shows how far the command read."""
    deletes = [c for c in run_program(HOSTS).of_type("remote:Command") if c.inputs.get("delete")]
    assert len(deletes) == 3 * 3  # the primary's or replica's step, pooler, health endpoint
    for command in deletes:
        payload = tmp_path / "stdin"
        payload.write_text(command.inputs["stdin"])
        with payload.open("rb") as stdin:
            done = subprocess.run(
                ["sh", "-c", command.inputs["delete"]], stdin=stdin, capture_output=True, timeout=30
            )
            assert (done.returncode, stdin.tell()) == (0, payload.stat().st_size), command.name
        assert done.stdout.startswith(b"mastodon-data: ") and payload.stat().st_size > 30_000


def test_droplet_steps_go_without_their_host(droplets):
    # A droplet goes with the stack (or behind its back): no step's delete needs its host.
    commands = droplets.of_type("remote:Command")
    assert commands and all(c.inputs.get("delete") is None for c in commands)


def test_droplets_outputs(droplets):
    env = droplets.outputs["mastodon_env"]
    assert env == {  # through PgBouncer on each droplet
        "DB_HOST": "10.118.0.2",
        "DB_PORT": "6432",
        "DB_NAME": "mastodon_production",
        "DB_USER": "mastodon",
        "DB_PASS": SECRETS["dbPassword"],
        "DB_SSLMODE": "require",
        "PREPARED_STATEMENTS": "false",
        "REPLICA_DB_HOST": "10.118.0.3",
        "REPLICA_DB_PORT": "6432",
        "REPLICA_DB_NAME": "mastodon_production_replica",
        "REPLICA_DB_USER": "mastodon",
        "REPLICA_DB_PASS": SECRETS["dbPassword"],
        "REPLICA_PREPARED_STATEMENTS": "false",
    }
    assert droplets.outputs["migration_env"] == {
        "DB_HOST": "10.118.0.2",
        "DB_PORT": "5432",
        "DB_NAME": "mastodon_production",
        "PREPARED_STATEMENTS": "true",
    }
    assert droplets.outputs["primary"] == {
        "name": "db-0",
        "public_address": "203.0.113.1",
        "private_address": "10.118.0.2",
    }
    assert [r["private_address"] for r in droplets.outputs["replicas"]] == ["10.118.0.3"]
    assert set(droplets.outputs["replication"]) == {"db-0", "db-1"}
    assert droplets.outputs["postgres_ca_cert"] == CA_CERT
    settings = parse_settings(DROPLETS, frozenset(SECRETS))
    rules = monitoring.render_rules(settings.replication, settings.alerts)
    assert droplets.outputs["alert_rules"] == rules and "alert_rules" not in droplets.secret_outputs


def test_no_replica_means_no_replica_variables():
    run = run_program({**DROPLETS, "replicaCount": 0})
    assert len(run.of_type("/droplet:Droplet")) == 1
    assert not any(k.startswith("REPLICA_") for k in run.outputs["mastodon_env"])
    (firewall,) = run.of_type("/firewall:Firewall")
    assert all("sourceTags" not in r for r in firewall.inputs["inboundRules"])


def test_hosts_mode_runs_on_the_listed_hosts_without_cloud_resources():
    run = run_program(HOSTS)
    assert not [r for r in run.resources if r.typ.startswith("digitalocean:")]
    commands = {c.name: c for c in run.of_type("remote:Command")}
    assert commands["replication-pg18-replica-db3"].inputs["connection"]["host"] == "192.0.2.3"
    replica = stdin_of(commands["replication-pg18-replica-db3"])["params"]
    assert replica["primary_address"] == "10.0.0.1"
    assert run.outputs["mastodon_env"]["DB_HOST"] == "10.0.0.1"
    assert run.outputs["mastodon_env"]["REPLICA_DB_HOST"] == "10.0.0.2"


def test_replicas_wait_for_the_primary_and_status_for_everything():
    run = run_program(HOSTS)
    names = {c.name for c in run.of_type("remote:Command")}
    after = {n: {d._name for d in (run.options[n].depends_on or [])} for n in names}
    replicas = {f"replication-pg18-replica-db{n}" for n in (2, 3)}
    assert all("replication-pg18-primary" in after[r] for r in replicas)
    statuses = sorted(n for n in names if n.startswith("replication-pg18-status-"))
    assert statuses == [f"replication-pg18-status-db{n}" for n in (1, 2, 3)]
    assert all({"replication-pg18-primary", *replicas} <= after[s] for s in statuses)
    poolers = sorted(n for n in names if n.startswith("replication-pg18-pooler-"))
    assert poolers == [f"replication-pg18-pooler-db{n}" for n in (1, 2, 3)]


def test_bad_config_stops_the_program_before_any_resource():
    with pytest.raises(pulumi.RunError, match=r"adminCidrs\[0\] = '0.0.0.0/0'"):
        run_program({**DROPLETS, "adminCidrs": ["0.0.0.0/0"]})


def test_missing_secret_names_the_command_to_set_it():
    secrets = {k: v for k, v in SECRETS.items() if k != "replicationPassword"}
    with pytest.raises(
        pulumi.RunError, match="pulumi config set --secret mastodon-data:replicationPassword"
    ):
        run_program(DROPLETS, secrets)


def test_short_password_is_refused_without_showing_it():
    with pytest.raises(pulumi.RunError, match="dbPassword") as caught:
        run_program(DROPLETS, {**SECRETS, "dbPassword": "short-pw"})
    assert "short-pw" not in str(caught.value)


def test_misspelt_key_stops_the_program():
    """The keys the stack set come from PULUMI_CONFIG, as the language host hands them over."""
    with pytest.raises(pulumi.RunError, match=r"replicaCont = 2: unknown key\. Fix: did you mean"):
        run_program({**DROPLETS, "replicaCont": 2})


def test_secret_set_in_clear_text_stops_the_program_without_showing_it():
    plain = {k: v for k, v in SECRETS.items() if k != "dbPassword"}
    with pytest.raises(pulumi.RunError, match=r"dbPassword = \[plain text\]") as caught:
        run_program({**DROPLETS, "dbPassword": SECRETS["dbPassword"]}, plain)
    assert SECRETS["dbPassword"] not in str(caught.value)


def test_hosts_mode_never_imports_the_digitalocean_sdk():
    """Its import costs every `up` ~0.3 s; a hosts-mode stack uses only the command provider."""
    script = (
        "import sys, json\n"
        "from program_harness import run_program\n"
        "from tests.fixtures import hosts_stack\n"
        "run_program(hosts_stack(count=3, replicas=2))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('pulumi_'))))\n"
    )
    here = Path(__file__).resolve()
    paths = [str(here.parent), str(here.parents[2])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert "pulumi_command" in loaded
    assert [m for m in loaded if m.startswith("pulumi_digitalocean")] == []
