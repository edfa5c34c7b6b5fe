"""The read endpoint over the replicas: the health endpoint's verdicts (host/health_server.py,
pure part), the load balancer of droplets mode on Pulumi mocks, HAProxy's configuration of hosts
mode, the settings and their errors. The endpoint against a real PostgreSQL:
tests/local/test_replica_health.py."""

from __future__ import annotations

import health_server
import pytest
from program_harness import run_program

from mastodon_data.config import ConfigError, parse_settings
from tests.fixtures import DROPLETS, SECRETS, hosts_stack

STREAMING = {"in_recovery": True, "streaming": True, "lag_bytes": 0, "lag_seconds": 0}


@pytest.mark.parametrize(
    ("state", "status", "reason"),
    [
        (STREAMING, 200, "streaming replica within the lag bounds"),
        ({**STREAMING, "lag_bytes": 100, "lag_seconds": 5.0}, 200,
         "streaming replica within the lag bounds"),
        ({**STREAMING, "in_recovery": False}, 503, "not a replica (this server is a primary)"),
        ({**STREAMING, "streaming": False, "primary_answers": True}, 503,
         "not streaming from the primary, which answers"),
        ({**STREAMING, "streaming": False, "primary_answers": False}, 200,
         "primary unreachable: serving all it got"),
        ({**STREAMING, "streaming": False, "primary_answers": False, "lag_bytes": 101}, 503,
         "101 bytes behind (more than 100)"),
        ({**STREAMING, "lag_bytes": 101}, 503, "101 bytes behind (more than 100)"),
        ({**STREAMING, "lag_seconds": 5.05}, 503, "5.0 s behind (more than 5)"),
        ({"error": "no socket"}, 503, "PostgreSQL unreachable: no socket"),
    ],
)  # fmt: skip
def test_the_verdict_names_the_first_reason_a_replica_is_not_served(state, status, reason):
    code, body = health_server.verdict(state, 100, 5)
    assert (code, body["reason"], body["healthy"]) == (status, reason, status == 200)
    assert (body["max_lag_bytes"], body["max_lag_seconds"]) == (100, 5)


def test_the_primary_is_probed_where_primary_conninfo_says(tmp_path):
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        conninfo = f"host=127.0.0.1 port={port} user=replicator sslmode=verify-full"
        assert health_server.primary_answers(conninfo) is True
    assert health_server.primary_answers(conninfo) is False  # closed: refused
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / ".s.PGSQL.5433"))
        listener.listen()
        assert health_server.primary_answers(f"host='{tmp_path}' port=5433") is True
    assert health_server.primary_answers(f"host='{tmp_path}' port=5434") is False


def test_lag_in_the_query_overrides_the_byte_bound_as_patroni_does():
    assert health_server.max_bytes_asked("/replica?lag=1024", 99) == 1024
    assert health_server.max_bytes_asked("/replica", 99) == 99
    assert health_server.max_bytes_asked("/replica?lag=ten", 99) == 99


def test_droplets_mode_puts_an_internal_load_balancer_over_the_tag_in_the_env():
    run = run_program({**DROPLETS, "replicaCount": 2, "replicaLoadBalancer": True})
    (lb,) = run.of_type("/loadBalancer:LoadBalancer")
    assert lb.inputs["network"] == "INTERNAL" and lb.inputs["vpcUuid"] == "network-vpc-id"
    assert lb.inputs["dropletTag"] == "mastodon-data-unit-db"
    assert lb.inputs["forwardingRules"] == [
        {"entryProtocol": "tcp", "entryPort": 6432, "targetProtocol": "tcp", "targetPort": 6432}
    ]
    assert lb.inputs["healthcheck"] == {
        "protocol": "http", "port": 8008, "path": "/replica", "checkIntervalSeconds": 3,
        "responseTimeoutSeconds": 3, "unhealthyThreshold": 2, "healthyThreshold": 2,
    }  # fmt: skip
    env = run.outputs["mastodon_env"]
    assert (env["REPLICA_DB_HOST"], env["REPLICA_DB_PORT"]) == ("10.118.0.200", "6432")
    assert run.outputs["read_endpoint"] == {
        "private_host": "10.118.0.200", "port": 6432, "health_port": 8008, "path": "/replica"
    }  # fmt: skip
    assert [r["private_address"] for r in run.outputs["replicas"]] == ["10.118.0.3", "10.118.0.4"]
    # The load balancer reaches the pools whatever postgresAllowedSources says.
    (firewall,) = run.of_type("/firewall:Firewall")
    rule = {"protocol": "tcp", "portRange": "6432", "sourceLoadBalancerUids": [f"{lb.name}-id"]}
    assert firewall.inputs["inboundRules"][-1] == rule


@pytest.mark.parametrize(
    ("config", "wanted"),
    [
        ({**DROPLETS, "replicaCount": 2}, True),  # auto: droplets mode with 2 replicas or more
        ({**DROPLETS, "replicaCount": 3, "replicaLoadBalancer": "auto"}, True),
        ({**DROPLETS, "replicaCount": 1}, False),  # auto: one replica, nothing to spread
        ({**DROPLETS, "replicaCount": 1, "replicaLoadBalancer": "true"}, True),
        ({**DROPLETS, "replicaCount": 2, "replicaLoadBalancer": False}, False),
        ({**hosts_stack(count=3, replicas=2)}, False),  # auto: hosts mode runs its own
        ({**hosts_stack(count=3, replicas=2), "replicaLoadBalancer": True}, True),
    ],
)  # fmt: skip
def test_replica_load_balancer_auto_true_false(config, wanted):
    settings = parse_settings(config, set(SECRETS))
    assert settings.replication.replica_load_balancer is wanted


def test_replica_load_balancer_refuses_other_words():
    with pytest.raises(ConfigError) as caught:
        parse_settings({**DROPLETS, "replicaLoadBalancer": "yes"}, set(SECRETS))
    assert str(caught.value) == (
        "mastodon-data:replicaLoadBalancer = 'yes': not one of auto, true, false. "
        "Fix: pulumi config set mastodon-data:replicaLoadBalancer auto"
    )


def test_without_the_setting_or_replicas_there_is_no_load_balancer():
    assert run_program(DROPLETS).of_type("/loadBalancer:LoadBalancer") == []
    alone = run_program({**DROPLETS, "replicaCount": 0, "replicaLoadBalancer": True})
    assert alone.of_type("/loadBalancer:LoadBalancer") == []


def test_hosts_mode_exports_haproxy_over_every_server_with_the_primary_as_backup():
    run = run_program({**hosts_stack(count=3, replicas=2), "replicaLoadBalancer": True})
    config = run.outputs["read_endpoint_haproxy"]
    assert config.splitlines()[-4:] == [
        "    server db1 10.0.0.1:6432 check port 8008",
        "    server db2 10.0.0.2:6432 check port 8008",
        "    server db3 10.0.0.3:6432 check port 8008",
        "    server db1-primary 10.0.0.1:6432 backup",
    ]
    assert "    bind 127.0.0.1:6432" in config.splitlines()
    assert run.outputs["mastodon_env"]["REPLICA_DB_HOST"] == "127.0.0.1"


def test_the_health_port_may_not_be_a_database_port():
    for port in (5432, 6432):
        with pytest.raises(ConfigError, match="replicaHealthPort"):
            parse_settings({**DROPLETS, "replicaHealthPort": port}, set(SECRETS))
