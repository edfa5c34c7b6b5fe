"""Monitoring alert policies (`/v2/monitoring/alerts`): records only; no metric is watched and no
notification is ever sent.

As DigitalOcean has it (the provider's resource_monitor_alert.go, godo's monitoring.go,
DigitalOcean's OpenAPI description, specification/resources/monitoring): a create answers 200
(not 201) with `{"policy": ...}`, a uuid its id; a PUT is a full representation; a DELETE 204;
a list `{"policies": [...], "links", "meta"}`. Every field is sent every time (godo has no
`omitempty`): an empty `alerts.email` or `alerts.slack` comes as null and is answered as []. The
`type` names what `entities` are: droplet ids for `v1/insights/droplet/...`, load balancer ids
for `v1/insights/lbaas/...`, a database cluster's uuid for `v1/dbaas/alerts/...`; with neither
entities nor tags the policy covers every entity of that kind in the account. The sources do not
say what DigitalOcean answers for an entity it does not have; the stand-in refuses it (422).
"""

from __future__ import annotations

import uuid

from .base import Request, Resource, at, json_body, page, unprocessable

DROPLET_METRICS = ("load_1", "load_5", "load_15", "memory_utilization_percent",
                   "disk_utilization_percent", "cpu", "disk_read", "disk_write",
                   "public_outbound_bandwidth", "public_inbound_bandwidth",
                   "private_outbound_bandwidth", "private_inbound_bandwidth")  # fmt: skip
LBAAS_METRICS = ("avg_cpu_utilization_percent", "connection_utilization_percent",
                 "droplet_health", "tls_connections_per_second_utilization_percent",
                 "increase_in_http_error_rate_percentage_5xx",
                 "increase_in_http_error_rate_percentage_4xx",
                 "increase_in_http_error_rate_count_5xx", "increase_in_http_error_rate_count_4xx",
                 "high_http_request_response_time", "high_http_request_response_time_50p",
                 "high_http_request_response_time_95p",
                 "high_http_request_response_time_99p")  # fmt: skip
DBAAS_METRICS = ("load_15_alerts", "memory_utilization_alerts", "disk_utilization_alerts",
                 "cpu_alerts")  # fmt: skip
# type -> the account's resource whose ids its entities are (autoscale pools: not modelled)
ENTITY_KINDS = {
    **{f"v1/insights/droplet/{m}": "droplets" for m in DROPLET_METRICS},
    **{f"v1/insights/lbaas/{m}": "load_balancers" for m in LBAAS_METRICS},
    **{f"v1/dbaas/alerts/{m}": "databases" for m in DBAAS_METRICS},
}
COMPARES = ("GreaterThan", "LessThan")
WINDOWS = ("5m", "10m", "30m", "1h")


def string_list(body: dict, key: str, where: str = "") -> list[str]:
    values = body.get(key)
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise unprocessable(f"{where}{key}: a list of non-empty strings")
    return list(values)


def checked_alerts(body) -> dict:
    """Where notifications would go: email addresses and Slack channels with their webhook."""
    if not isinstance(body, dict):
        raise unprocessable("alerts: an object with email and slack")
    slack = body.get("slack") or []
    if not isinstance(slack, list) or not all(
        isinstance(s, dict) and s.get("channel") and s.get("url") for s in slack
    ):
        raise unprocessable("alerts.slack: a list of {channel, url}, both non-empty")
    return {
        "email": string_list(body, "email", "alerts."),
        "slack": [{"channel": s["channel"], "url": s["url"]} for s in slack],
    }


class AlertPolicies(Resource):
    COLLECTION = "alert_policies"  # by uuid
    KIND = "alert policy"

    def routes(self):
        base = "/v2/monitoring/alerts"
        return [
            *at(base, GET=self.list, POST=self.create),
            *at(f"{base}/{{uuid}}", GET=self.get, PUT=self.update, DELETE=self.delete),
        ]

    def checked(self, body: dict) -> dict:
        """The policy as stored, or the API's refusal."""
        kind = ENTITY_KINDS.get(body.get("type"))
        if not kind:
            raise unprocessable(f"type {body.get('type')!r}: not an alert policy type")
        if body.get("compare") not in COMPARES:
            raise unprocessable(f"compare {body.get('compare')!r}: GreaterThan or LessThan")
        if body.get("window") not in WINDOWS:
            raise unprocessable(f"window {body.get('window')!r}: 5m, 10m, 30m or 1h")
        value = body.get("value")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise unprocessable(f"value {value!r}: a number")
        if not isinstance(body.get("description"), str) or not body["description"]:
            raise unprocessable("description: required")
        entities = string_list(body, "entities")
        resource = getattr(self.account, kind)
        missing = [e for e in entities if e not in resource.items]
        if missing:
            raise unprocessable(f"entities {missing}: no {resource.KIND} of this account has "
                                f"that id (type {body['type']})")  # fmt: skip
        return {
            "type": body["type"],
            "description": body["description"],
            "compare": body["compare"],
            "value": value,
            "window": body["window"],
            "entities": entities,
            "tags": string_list(body, "tags"),
            "alerts": checked_alerts(body.get("alerts")),
            "enabled": body.get("enabled") is not False,
        }

    def list(self, request: Request):
        return page(list(self.items.values()), "policies", request.query)

    def create(self, request: Request):
        policy = {"uuid": str(uuid.uuid4()), **self.checked(json_body(request))}
        self.items[policy["uuid"]] = policy
        self.mark_fresh(request, policy["uuid"])
        self.save()
        return 200, {"policy": policy}

    def get(self, request: Request):
        self.check_fresh(request.params["uuid"])
        return {"policy": self.find(request.params["uuid"])}

    def update(self, request: Request):
        policy = self.find(request.params["uuid"])
        policy.update(self.checked(json_body(request)))
        self.save()
        return {"policy": policy}

    def delete(self, request: Request):
        self.find(request.params["uuid"])
        del self.items[request.params["uuid"]]
        self.save()
        return 204, None
