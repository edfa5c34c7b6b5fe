"""Thresholds of the alert rules the stack ships (mastodon_data/monitoring/rules.yml): one
setting each, where an operator would tune them."""

from __future__ import annotations

import re

from mastodon_data.config.checks import Field, Validation
from mastodon_data.config.records import AlertThresholds
from mastodon_data.config.topology import WAL

PERCENT = range(1, 101)
FIELDS = (
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


def snake(key: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), key)


def parse_alerts(v: Validation) -> AlertThresholds | None:
    values = v.read(FIELDS)
    if not v.ok(*values):
        return None
    return AlertThresholds(**{snake(key): value for key, value in values.items()})
