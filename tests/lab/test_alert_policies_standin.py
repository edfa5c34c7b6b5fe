"""DigitalOcean's alert policies of a droplets stack, through the real engine and provider on a
DigitalOcean stand-in of this test's own (mlap), one droplet: `up` with alertEmails and a Slack
channel makes one policy per metric (CPU, memory, disk) over the droplet's id, as the stand-in's
account then holds them; the Slack webhook is in the state only encrypted; a changed address and
threshold update the same policies in place (the preview replaces nothing); a refreshed preview
is quiet; without a destination the policies go.

Lab `mlap`: public network 10.241.130.0/24, VPC 10.240.130.0/24."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from standinkit import Droplets, standin_account

from lab.standin.service import StandInLab

pytestmark = [pytest.mark.engine, pytest.mark.lab]
LAB = StandInLab(
    prefix="mlap",
    public_network="10.241.130.0/24",
    vpc_pool=("10.240.130.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-alerts-do"),
)
WEBHOOK = "https://hooks.slack.example/services/T000/B000/mlap-webhook-secret"
TYPES = {
    "v1/insights/droplet/cpu": 90.0,
    "v1/insights/droplet/memory_utilization_percent": 90.0,
    "v1/insights/droplet/disk_utilization_percent": 80.0,
}


def policies(s: Droplets) -> dict[str, dict]:
    """The account's alert policies by type."""
    return {p["type"]: p for p in s.client.call("GET", "/v2/monitoring/alerts")["policies"]}


def ops(preview: dict) -> dict[str, list[str]]:
    """The preview's operations on MonitorAlerts, by resource name."""
    found: dict[str, list[str]] = {}
    for step in preview["steps"]:
        if "MonitorAlert" in step["urn"].split("::")[2]:
            found.setdefault(step["urn"].rpartition("::")[2], []).append(step["op"])
    return found


@pytest.fixture(scope="module")
def alerted(tmp_path_factory):
    with standin_account(LAB) as (client, key_id):
        s = Droplets(LAB, client.url, key_id, tmp_path_factory.mktemp("alerts"), "alerts",
                     "10.240.130.0/24", 0, protectData=False, alertEmails=["ops@example.org"],
                     alertSlackChannel="#db-alerts")  # fmt: skip
        s.secrets["alertSlackUrl"] = WEBHOOK
        s.apply()
        seen = {"first": policies(s), "droplet": s.droplet(0)["id"]}
        seen["state"] = s.stack.pulumi("stack", "export")
        s.config.update(alertEmails=["oncall@example.org"], alertCpuPercent=75)
        s.stack.configure(s.config, s.secrets)
        seen["preview"] = ops(json.loads(s.stack.preview("--json")))
        s.stack.up()
        seen["changed"] = policies(s)
        quiet = s.stack.preview("--refresh", "--expect-no-changes", check=False)
        seen["quiet"] = (s.stack.last.returncode, quiet + s.stack.last.stderr)
        s.secrets.pop("alertSlackUrl")
        s.config.pop("alertSlackChannel")
        s.apply(alertEmails=[])
        seen["without"] = policies(s)
        yield seen


def test_one_policy_per_metric_over_the_droplet_with_both_destinations(alerted):
    first = alerted["first"]
    assert {kind: p["value"] for kind, p in first.items()} == TYPES
    for policy in first.values():
        assert policy["entities"] == [str(alerted["droplet"])]
        assert (policy["compare"], policy["window"], policy["enabled"]) == (
            "GreaterThan", "5m", True,
        )  # fmt: skip
        assert policy["alerts"] == {
            "email": ["ops@example.org"],
            "slack": [{"channel": "#db-alerts", "url": WEBHOOK}],
        }


def test_the_webhook_is_in_the_state_only_encrypted(alerted):
    assert WEBHOOK not in alerted["state"]
    assert "mlap-webhook-secret" not in alerted["state"]


def test_a_new_address_and_threshold_update_the_same_policies_in_place(alerted):
    assert alerted["preview"] == {
        "db-alerts-cpu": ["update"],
        "db-alerts-memory": ["update"],
        "db-alerts-disk": ["update"],
    }
    changed, first = alerted["changed"], alerted["first"]
    assert {kind: p["uuid"] for kind, p in changed.items()} == {
        kind: p["uuid"] for kind, p in first.items()
    }
    assert changed["v1/insights/droplet/cpu"]["value"] == 75.0
    assert {p["alerts"]["email"][0] for p in changed.values()} == {"oncall@example.org"}
    code, out = alerted["quiet"]
    assert code == 0, out[-3000:]


def test_without_a_destination_the_policies_go(alerted):
    assert alerted["without"] == {}
