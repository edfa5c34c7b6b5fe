"""Thresholds of the alert rules the stack ships (mastodon_data/monitoring/rules.yml): one
setting each, where an operator would tune them."""

from __future__ import annotations

import re

from mastodon_data.config.checks import Field, Validation, is_private, set_path_command
from mastodon_data.config.records import AlertThresholds
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
FIELDS = (*ALERT_FIELDS, SOURCES_FIELD)


def snake(key: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), key)


def parse_alerts(v: Validation) -> AlertThresholds | None:
    values = v.read(ALERT_FIELDS)
    if not v.ok(*values):
        return None
    return AlertThresholds(**{snake(key): value for key, value in values.items()})


def parse_monitoring_sources(v: Validation) -> dict[str, tuple[str, ...]]:
    """`monitoring_sources`: private CIDRs of the operator's Prometheus, never a /0."""
    (values,) = v.read((SOURCES_FIELD,)).values()
    opens = ("the exporters to every address", f"{SOURCES_EXAMPLE}  # your Prometheus")
    for key, text, network in v.cidr_entries(
        "monitoringSources", values or (), SOURCES_EXAMPLE, opens
    ):
        if not is_private(network):
            v.bad(key, text, "not a private range", set_path_command(key, SOURCES_EXAMPLE))
    return {"monitoring_sources": tuple(values or ())}
