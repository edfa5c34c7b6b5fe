"""The exporters' targets (stack output prometheus_targets, Prometheus file_sd), the
monitoringSources setting and the cloud firewall's rules for the exporters' ports."""

from __future__ import annotations

import pytest

from mastodon_data.components.droplets import firewall_inbound
from mastodon_data.config import SECRET_KEYS, ConfigError, parse_settings
from mastodon_data.monitoring.targets import Server, file_sd
from tests.fixtures import DROPLETS, SECRETS
from tests.unit.program_harness import run_program

PRIMARY = Server("db-0", "primary", "10.0.0.2")
REPLICA = Server("db-1", "replica", "10.0.0.3")


def test_every_exporter_of_every_server_is_a_target():
    groups = file_sd([PRIMARY, REPLICA], 5432, 6432)
    plain = [(g["labels"]["job"], g["targets"][0]) for g in groups if g["labels"]["job"] != "ssl"]
    assert plain == [
        ("postgres", "10.0.0.2:9187"), ("node", "10.0.0.2:9100"), ("pgbouncer", "10.0.0.2:9127"),
        ("postgres", "10.0.0.3:9187"), ("node", "10.0.0.3:9100"), ("pgbouncer", "10.0.0.3:9127"),
    ]  # fmt: skip
    probes = [g for g in groups if g["labels"]["job"] == "ssl"]
    assert probes[1] == {
        "targets": ["10.0.0.2:9219"],
        "labels": {
            "job": "ssl", "server": "db-0", "role": "primary", "__metrics_path__": "/probe",
            "__param_target": "10.0.0.2:6432", "__param_module": "postgres",
            "instance": "10.0.0.2:6432",
        },
    }  # fmt: skip
    assert [g["labels"]["instance"] for g in probes] == [
        "10.0.0.2:5432", "10.0.0.2:6432", "10.0.0.3:5432", "10.0.0.3:6432",
    ]  # fmt: skip


def test_a_replica_removed_disappears_and_no_pool_means_no_pgbouncer_target():
    groups = file_sd([PRIMARY], 5432, None)
    assert [(g["labels"]["job"], g["targets"][0]) for g in groups] == [
        ("postgres", "10.0.0.2:9187"), ("node", "10.0.0.2:9100"), ("ssl", "10.0.0.2:9219"),
    ]  # fmt: skip
    assert all(g["labels"]["server"] == "db-0" for g in groups)


def settings(**changes):
    return parse_settings({**DROPLETS, **changes}, frozenset((*SECRET_KEYS, "monitorPassword")))


def exporter_rules(droplets) -> list[tuple[str, list[str]]]:
    return [
        (rule["port_range"], rule["source_addresses"])
        for rule in firewall_inbound(droplets, None, "10.10.0.0/16")
        if rule["port_range"] in {"9187", "9100", "9127", "9854", "9219"}
    ]


def test_the_firewall_opens_the_exporters_to_monitoring_sources_alone():
    pooled = settings(monitoringSources=["10.10.0.5/32"], pgbouncer=True).droplets
    assert exporter_rules(pooled) == [
        (port, ["10.10.0.5/32"]) for port in ("9187", "9100", "9127", "9219")
    ]
    direct = settings(monitoringSources=["10.10.0.5/32"], pgbouncer=False).droplets
    assert [port for port, _ in exporter_rules(direct)] == ["9187", "9100", "9219"]
    assert exporter_rules(settings().droplets) == []


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (["0.0.0.0/0"], "opens the exporters to every address"),
        (["8.8.8.8/32"], "not a private range"),
        (["10.10.0.5"], r"monitoringSources\[0\] = '10.10.0.5': not a CIDR"),
    ],
)
def test_monitoring_sources_are_private_ranges(sources, message):
    with pytest.raises(ConfigError, match=message):
        settings(monitoringSources=sources)


def test_the_stack_exports_its_targets_only_with_monitoring_sources():
    run = run_program(
        {**DROPLETS, "monitoringSources": ["10.10.0.5/32"], "pgbouncer": False},
        {**SECRETS, "monitorPassword": "monitor-secret-0123456789"},
    )
    groups = run.outputs["prometheus_targets"]
    assert [(g["labels"]["server"], g["labels"]["job"], g["targets"][0]) for g in groups] == [
        ("db-0", "postgres", "10.118.0.2:9187"), ("db-0", "node", "10.118.0.2:9100"),
        ("db-0", "ssl", "10.118.0.2:9219"),
        ("db-1", "postgres", "10.118.0.3:9187"), ("db-1", "node", "10.118.0.3:9100"),
        ("db-1", "ssl", "10.118.0.3:9219"),
    ]  # fmt: skip
    assert "prometheus_targets" not in run_program(DROPLETS).outputs
