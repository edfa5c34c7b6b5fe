"""The stand-in's monitoring alert policies on their own (no lab hosts, no root): the body the
DigitalOcean provider sends (godo leaves nothing out: empty lists come as null), read back as
DigitalOcean answers it, updated, listed, deleted, and the refusals."""

from __future__ import annotations

import pytest
from test_standin_api import droplet, refused, vpc
from test_standin_databases import Recorder, online_cluster, send, served

from lab.standin.account import Account

ALERTS = "/v2/monitoring/alerts"
WEBHOOK = "https://hooks.slack.com/services/T0/B0/x"


def provider_body(entities: list[str], **changes) -> dict:
    """What resourceDigitalOceanMonitorAlertCreate sends for the program's CPU policy."""
    return {
        "type": "v1/insights/droplet/cpu",
        "description": "mastodon-data dev: CPU over 90 %",
        "compare": "GreaterThan",
        "value": 90,
        "window": "5m",
        "entities": entities,
        "tags": [],
        "alerts": {"slack": None, "email": ["ops@example.org"]},
        "enabled": True,
        **changes,
    }


@pytest.fixture
def api(tmp_path):
    with served(Recorder(), tmp_path) as client:
        yield client


@pytest.fixture
def droplet_id(api) -> str:
    return str(droplet(api, vpc(api)["id"])["id"])


def test_a_policy_is_created_and_read_back_exactly(api, droplet_id):
    status, created = send(api, "POST", ALERTS, provider_body([droplet_id]))
    assert status == 200
    ident = created["policy"]["uuid"]
    expected = {
        "uuid": ident,
        "type": "v1/insights/droplet/cpu",
        "description": "mastodon-data dev: CPU over 90 %",
        "compare": "GreaterThan",
        "value": 90,
        "window": "5m",
        "entities": [droplet_id],
        "tags": [],
        "alerts": {"email": ["ops@example.org"], "slack": []},
        "enabled": True,
    }
    assert created == {"policy": expected}
    assert api.call("GET", f"{ALERTS}/{ident}") == {"policy": expected}


def test_an_update_replaces_the_policy_in_place_and_survives_a_restart(api, droplet_id, tmp_path):
    ident = api.call("POST", ALERTS, provider_body([droplet_id]))["policy"]["uuid"]
    slack = [{"channel": "#ops", "url": WEBHOOK}]
    changed = provider_body([droplet_id], value=75.5, window="10m",
                            alerts={"slack": slack, "email": None})  # fmt: skip
    updated = api.call("PUT", f"{ALERTS}/{ident}", changed)["policy"]
    assert (updated["uuid"], updated["value"], updated["window"]) == (ident, 75.5, "10m")
    assert updated["alerts"] == {"email": [], "slack": slack}
    restarted = Account(state_file=tmp_path / "state.json", log=lambda text: None)
    assert restarted.alert_policies.items == {ident: updated}


def test_a_list_pages_as_the_api_does(api, droplet_id):
    made = [api.call("POST", ALERTS, provider_body([droplet_id], value=v))["policy"]
            for v in (70, 80, 90)]  # fmt: skip
    first = api.call("GET", f"{ALERTS}?per_page=2")
    assert first["policies"] == made[:2]
    assert first["links"] == {"pages": {"next": "?page=2&per_page=2", "last": "?page=2"}}
    assert first["meta"] == {"total": 3}
    assert api.call("GET", f"{ALERTS}?per_page=2&page=2")["policies"] == made[2:]


def test_a_deleted_policy_is_gone_and_a_missing_uuid_is_404(api, droplet_id):
    ident = api.call("POST", ALERTS, provider_body([droplet_id]))["policy"]["uuid"]
    assert send(api, "DELETE", f"{ALERTS}/{ident}") == (204, None)
    assert api.call("GET", ALERTS)["policies"] == []
    for method in ("GET", "DELETE"):
        refused(lambda m=method: api.call(m, f"{ALERTS}/{ident}"), 404, "could not be found")
    body = provider_body([droplet_id])
    refused(lambda: api.call("PUT", f"{ALERTS}/{ident}", body), 404, "could not be found")


def test_a_managed_cluster_policy_names_the_cluster(api):
    cluster = online_cluster(api)
    body = provider_body([cluster["id"]], type="v1/dbaas/alerts/disk_utilization_alerts")
    policy = api.call("POST", ALERTS, body)["policy"]
    assert (policy["type"], policy["entities"]) == (body["type"], [cluster["id"]])
    # a cluster's uuid is no droplet's id
    wrong = provider_body([cluster["id"]])
    refused(lambda: api.call("POST", ALERTS, wrong), 422, "no droplet of this account")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"type": "v1/insights/droplet/cpu_percent"}, "type 'v1/insights/droplet/cpu_percent'"),
        ({"compare": "Above"}, "compare 'Above': GreaterThan or LessThan"),
        ({"window": "15m"}, "window '15m': 5m, 10m, 30m or 1h"),
        ({"value": "90"}, "value '90': a number"),
        ({"description": ""}, "description: required"),
        ({"entities": ["999"]}, "entities ['999']: no droplet of this account"),
        ({"alerts": {"slack": [{"channel": "#ops", "url": ""}], "email": None}}, "alerts.slack"),
        ({"alerts": {"slack": None, "email": [""]}}, "alerts.email: a list of non-empty"),
    ],
)
def test_refusals_are_422_with_the_apis_error_body(api, droplet_id, changes, words):
    body = {**provider_body([droplet_id]), **changes}
    document = refused(lambda: api.call("POST", ALERTS, body), 422, words)
    assert document["id"] == "unprocessable_entity"
    assert api.call("GET", ALERTS)["policies"] == []
