"""DigitalOcean's alert policies: CPU, memory and disk use over the database droplets (droplets
mode) or the managed cluster (managed mode), to alertEmails and/or a Slack channel. One policy
per metric; a changed address, threshold or droplet updates it in place (the provider replaces
none of its fields). The entities are the droplets' ids rather than their tag: the policy then
names exactly the stack's droplets (a preview shows a replaced one), and a droplet someone
tags by hand is not watched by accident."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

from mastodon_data.config import AlertPolicySettings

# metric -> (droplet type, managed cluster type, what it measures)
METRICS = {
    "cpu": ("v1/insights/droplet/cpu", "v1/dbaas/alerts/cpu_alerts", "CPU"),
    "memory": (
        "v1/insights/droplet/memory_utilization_percent",
        "v1/dbaas/alerts/memory_utilization_alerts",
        "memory",
    ),
    "disk": (
        "v1/insights/droplet/disk_utilization_percent",
        "v1/dbaas/alerts/disk_utilization_alerts",
        "disk",
    ),
}


def policy_args(settings: AlertPolicySettings, stack: str, managed: bool) -> dict[str, dict]:
    """Each policy's arguments but its entities and Slack webhook, as plain data."""
    thresholds = {
        "cpu": settings.cpu_percent,
        "memory": settings.memory_percent,
        "disk": settings.disk_percent,
    }
    where = "managed cluster" if managed else "database droplets"
    return {
        metric: {
            "type": managed_type if managed else droplet_type,
            "compare": "GreaterThan",
            "value": float(thresholds[metric]),
            "window": settings.window,
            "description": (
                f"mastodon-data {stack}: {what} of the {where} over {thresholds[metric]} % "
                f"({settings.window})"
            ),
            "enabled": True,
        }
        for metric, (droplet_type, managed_type, what) in METRICS.items()
    }


class AlertPolicies(pulumi.ComponentResource):
    """`entities`: the database droplets' ids, or the cluster's id (managed); `slack_url`: the
    secret webhook when `settings.slack_channel` is set."""

    def __init__(
        self,
        name: str,
        settings: AlertPolicySettings,
        entities: list[pulumi.Input[str]],
        managed: bool,
        slack_url: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mastodon-data:index:AlertPolicies", name, None, opts)
        slacks = None
        if settings.slack_channel:
            slacks = [do.MonitorAlertAlertsSlackArgs(channel=settings.slack_channel, url=slack_url)]
        alerts = do.MonitorAlertAlertsArgs(emails=list(settings.emails) or None, slacks=slacks)
        # The webhook is a credential: the state keeps the alerts block encrypted.
        child = pulumi.ResourceOptions(parent=self, additional_secret_outputs=["alerts"])
        args = policy_args(settings, pulumi.get_stack(), managed)
        self.policies = [
            do.MonitorAlert(f"{name}-{metric}", alerts=alerts, entities=entities, **a, opts=child)
            for metric, a in args.items()
        ]
        self.register_outputs({})
