"""DigitalOcean's alert policies (alertEmails, alertSlackChannel + the secret alertSlackUrl): the
settings and their refusals, and the program on Pulumi mocks in droplets and managed mode, with
and without a destination, with the exact arguments of each MonitorAlert."""

from __future__ import annotations

import pytest
from program_harness import run_program

from mastodon_data.config import ConfigError, parse_settings
from mastodon_data.stack_config import check
from tests.fixtures import DROPLETS, HOSTS, MANAGED, SECRETS

WEBHOOK = "https://hooks.slack.com/services/T0/B0/secret-part"
ALERT = "monitorAlert:MonitorAlert"


def policies(run) -> dict[str, dict]:
    return {r.name: r.inputs for r in run.of_type(ALERT)}


def expected(prefix: str, kind: str, entities: list[str], alerts: dict, **values) -> dict:
    types = {
        "droplets": ("v1/insights/droplet/cpu", "v1/insights/droplet/memory_utilization_percent",
                     "v1/insights/droplet/disk_utilization_percent"),
        "managed": ("v1/dbaas/alerts/cpu_alerts", "v1/dbaas/alerts/memory_utilization_alerts",
                    "v1/dbaas/alerts/disk_utilization_alerts"),
    }[kind]  # fmt: skip
    where = "managed cluster" if kind == "managed" else "database droplets"
    window = values.get("window", "5m")
    made = {}
    named = zip(("cpu", "memory", "disk"), ("CPU", "memory", "disk"), types, strict=True)
    for metric, what, typ in named:
        value = values.get(metric, {"cpu": 90, "memory": 90, "disk": 80}[metric])
        made[f"{prefix}-{metric}"] = {
            "type": typ,
            "compare": "GreaterThan",
            "value": float(value),
            "window": window,
            "description": f"mastodon-data unit: {what} of the {where} over {value} % ({window})",
            "enabled": True,
            "entities": entities,
            "alerts": alerts,
        }
    return made


def test_without_a_destination_no_policy_is_made():
    assert policies(run_program(DROPLETS)) == {}
    assert policies(run_program(MANAGED, {})) == {}
    assert [r for r in run_program(DROPLETS).resources if "AlertPolicies" in r.typ] == []


def test_droplets_mode_watches_each_database_droplet_by_id():
    config = {**DROPLETS, "replicaCount": 2, "alertEmails": ["ops@example.org", "dba@example.org"]}
    run = run_program(config)
    alerts = {"emails": ["ops@example.org", "dba@example.org"]}
    assert policies(run) == expected("db-alerts", "droplets", ["1001", "1002", "1003"], alerts)


def test_managed_mode_watches_the_cluster_and_the_webhook_stays_secret():
    config = {
        **MANAGED,
        "alertSlackChannel": "#db",
        "alertCpuPercent": 75,
        "alertMemoryPercent": 85,
        "alertDiskPercent": 70,
        "alertPolicyWindow": "10m",
    }
    run = run_program(config, {"alertSlackUrl": WEBHOOK})
    cluster = run.one("databaseCluster:DatabaseCluster")
    alerts = {"slacks": [{"channel": "#db", "url": WEBHOOK}]}
    assert policies(run) == expected(
        "postgres-alerts", "managed", [f"{cluster.name}-id"], alerts,
        cpu=75, memory=85, disk=70, window="10m",
    )  # fmt: skip
    for policy in run.of_type(ALERT):
        assert "alerts" in policy.secret_inputs
        assert run.options[policy.name].additional_secret_outputs == ["alerts"]
    assert WEBHOOK not in repr(run.outputs)


def test_a_changed_address_or_threshold_changes_only_those_arguments():
    """The provider replaces a MonitorAlert for no field (no ForceNew in
    resource_monitor_alert.go): these differences are updates in place."""
    before = policies(run_program({**DROPLETS, "alertEmails": ["ops@example.org"]}))
    config = {**DROPLETS, "alertEmails": ["oncall@example.org"], "alertCpuPercent": 80}
    after = policies(run_program(config))
    assert before.keys() == after.keys()
    changed = {
        name: sorted(k for k in before[name] if before[name][k] != after[name][k])
        for name in before
    }
    assert changed == {
        "db-alerts-cpu": ["alerts", "description", "value"],
        "db-alerts-memory": ["alerts"],
        "db-alerts-disk": ["alerts"],
    }


def test_hosts_mode_makes_no_policy_and_says_so():
    run = run_program({**HOSTS, "alertEmails": ["ops@example.org"]})
    assert policies(run) == {}
    settings = parse_settings({**HOSTS, "alertEmails": ["ops@example.org"]}, set(SECRETS))
    assert settings.alert_policies is None
    assert any("hosts mode makes no DigitalOcean alert policy" in w for w in settings.warnings)


def refusals(config: dict, secrets: dict | None = None) -> list[str]:
    secrets = {**SECRETS, **(secrets or {})}
    with pytest.raises(ConfigError) as raised:
        check({**DROPLETS, **config, **secrets}, set(secrets))
    return str(raised.value).splitlines()


@pytest.mark.parametrize(
    ("config", "secrets", "line"),
    [
        ({"alertEmails": ["ops@example.org", "ops.example.org"]}, None,
         "mastodon-data:alertEmails[1] = 'ops.example.org': not an email address. Fix: pulumi "
         "config set --path 'mastodon-data:alertEmails[1]' ops@example.org"),
        ({"alertEmails": ["ops@example.org"], "alertCpuPercent": 101}, None,
         "mastodon-data:alertCpuPercent = 101: not an integer from 1 to 100. Fix: pulumi config "
         "set mastodon-data:alertCpuPercent 90"),
        ({"alertEmails": ["ops@example.org"], "alertMemoryPercent": 0}, None,
         "mastodon-data:alertMemoryPercent = 0: not an integer from 1 to 100. Fix: pulumi config "
         "set mastodon-data:alertMemoryPercent 90"),
        ({"alertEmails": ["ops@example.org"], "alertPolicyWindow": "15m"}, None,
         "mastodon-data:alertPolicyWindow = '15m': not one of DigitalOcean's windows: 5m, 10m, "
         "30m, 1h. Fix: pulumi config set mastodon-data:alertPolicyWindow 5m"),
        ({"alertSlackChannel": "#db"}, None,
         "mastodon-data:alertSlackUrl = (not set): missing secret. Fix: pulumi config set "
         "--secret mastodon-data:alertSlackUrl 'https://hooks.slack.com/services/<...>' (the "
         "channel's incoming webhook)"),
        ({}, {"alertSlackUrl": WEBHOOK},
         "mastodon-data:alertSlackChannel = '': alertSlackUrl is set but names no channel. Fix: "
         "pulumi config set mastodon-data:alertSlackChannel '#db-alerts' (or pulumi config rm "
         "mastodon-data:alertSlackUrl)"),
        ({"alertSlackChannel": "#db"}, {"alertSlackUrl": "hooks.slack.com/x"},
         "mastodon-data:alertSlackUrl = [secret]: not an https:// URL. Fix: pulumi config set "
         "--secret mastodon-data:alertSlackUrl 'https://hooks.slack.com/services/<...>' (the "
         "channel's incoming webhook)"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_the_setting_and_the_fix(config, secrets, line):
    assert refusals(config, secrets) == [line]


def test_a_webhook_set_in_clear_text_is_refused_without_showing_it():
    with pytest.raises(ConfigError) as raised:
        check({**DROPLETS, **SECRETS, "alertSlackChannel": "#db", "alertSlackUrl": WEBHOOK},
              set(SECRETS))  # fmt: skip
    assert "mastodon-data:alertSlackUrl = [plain text]: stored in clear text" in str(raised.value)
    assert WEBHOOK not in str(raised.value)
