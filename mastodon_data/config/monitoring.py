"""Thresholds of the alert rules the stack ships (mastodon_data/monitoring/rules.yml), and
DigitalOcean's alert policies (their destinations, thresholds and window): one setting each,
where an operator would tune them."""

from __future__ import annotations

import re

from mastodon_data.config.checks import (
    Field,
    Validation,
    is_private,
    set_command,
    set_path_command,
)
from mastodon_data.config.project import PROJECT
from mastodon_data.config.records import AlertPolicySettings, AlertThresholds
from mastodon_data.config.secrets import SLACK_URL_KEY
from mastodon_data.config.topology import WAL

SOURCES_EXAMPLE = "10.10.0.5/32"

PERCENT = range(1, 101)
ALERT_FIELDS = (
    Field("alertReplayLagSeconds", allowed=range(1, 86401)),
    Field("alertReplayLagSize", example="1GB", **WAL),
    Field("alertSlotWalPercent", allowed=PERCENT),
    Field("alertDiskPercent", allowed=range(1, 100)),
    Field("alertArchiveWaitSeconds", allowed=range(10, 86401)),
    Field("alertFullBackupAgeHours", allowed=range(1, 8761)),
    Field("alertDiffBackupAgeHours", allowed=range(1, 8761)),
    Field("alertPoolWaitingClients", allowed=range(0, 100001)),
    Field("alertPoolMaxWaitSeconds", allowed=range(1, 3601)),
    Field("alertConnectionsPercent", allowed=PERCENT),
    Field("alertOpenFilesPercent", allowed=PERCENT),
    Field("alertCertificateDays", allowed=range(1, 366)),
)
SOURCES_FIELD = Field("monitoringSources")  # entries: parse_monitoring_sources
# Where `make exporters` built the binaries the program ships (mastodon_data/monitoring/builds.py
# reads them at preview); "": its own default.
HOME_FIELD = Field(
    "exportersHome",
    example="~/.cache/mastodon-data/exporters",
    check=lambda text: None if text.startswith(("/", "~")) else "not an absolute path",
)

# DigitalOcean's alert policies (droplets and managed mode): where, and over which window.
EMAIL = re.compile(r"[^@\s]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
POLICY_FIELDS = (
    Field("alertEmails", example="ops@example.org", pattern=EMAIL, what="not an email address"),
    Field("alertSlackChannel", example="'#db-alerts'"),
    Field("alertCpuPercent", allowed=PERCENT),
    Field("alertMemoryPercent", allowed=PERCENT),
    Field(
        "alertPolicyWindow",
        choices=("5m", "10m", "30m", "1h"),
        what="not one of DigitalOcean's windows: {choices}",
    ),
)

FIELDS = (*ALERT_FIELDS, SOURCES_FIELD, HOME_FIELD, *POLICY_FIELDS)


def snake(key: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), key)


def parse_alerts(v: Validation) -> AlertThresholds | None:
    values = v.read(ALERT_FIELDS)
    if not v.ok(*values):
        return None
    return AlertThresholds(**{snake(key): value for key, value in values.items()})


def parse_monitoring_sources(v: Validation) -> dict[str, tuple[str, ...] | str]:
    """`monitoring_sources`: private CIDRs of the operator's Prometheus, never a /0; and
    `exporters_home`, where the binaries the exporters need were built."""
    values, exporters_home = v.read((SOURCES_FIELD, HOME_FIELD)).values()
    opens = ("the exporters to every address", f"{SOURCES_EXAMPLE}  # your Prometheus")
    for key, text, network in v.cidr_entries(
        "monitoringSources", values or (), SOURCES_EXAMPLE, opens
    ):
        if not is_private(network):
            v.bad(key, text, "not a private range", set_path_command(key, SOURCES_EXAMPLE))
    return {"monitoring_sources": tuple(values or ()), "exporters_home": exporters_home or ""}


def parse_alert_policies(
    v: Validation, mode: str | None, thresholds: AlertThresholds | None, slack_url_set: bool
) -> AlertPolicySettings | None:
    """The policies' settings when at least one destination is set, else None (no policy)."""
    values = v.read(POLICY_FIELDS)
    emails, channel = values["alertEmails"] or (), values["alertSlackChannel"] or ""
    if slack_url_set and not channel:
        v.add("alertSlackChannel", "''", f"{SLACK_URL_KEY} is set but names no channel",
              f"{set_command('alertSlackChannel', POLICY_FIELDS[1].example)} "
              f"(or pulumi config rm {PROJECT}:{SLACK_URL_KEY})")  # fmt: skip
    if not (emails or channel) or not v.ok(*values) or thresholds is None:
        return None
    if mode == "hosts":
        v.warnings.append(
            "alertEmails / alertSlackChannel: hosts mode makes no DigitalOcean alert policy "
            "(the servers are not DigitalOcean's to watch); the Prometheus rules cover them"
        )
        return None
    return AlertPolicySettings(
        emails=emails,
        slack_channel=channel,
        cpu_percent=values["alertCpuPercent"],
        memory_percent=values["alertMemoryPercent"],
        disk_percent=thresholds.alert_disk_percent,
        window=values["alertPolicyWindow"],
    )
