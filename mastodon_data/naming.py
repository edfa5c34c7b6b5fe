"""Explicit names for DigitalOcean resources (no random suffixes). Pure."""

from __future__ import annotations

import re


def do_name(*parts: str) -> str:
    """`parts` joined with dashes as a DigitalOcean name: lower case, [a-z0-9-], at most 63."""
    text = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower())
    return re.sub(r"-{2,}", "-", text).strip("-")[:63].rstrip("-")


def data_volume_name(droplet_name: str) -> str:
    """The data volume of the droplet named `droplet_name` (one function, so a droplet's name
    and its volume's never drift apart)."""
    return do_name(droplet_name, "data")


def volume_device(volume_name: str) -> str:
    """Where DigitalOcean shows an attached volume on the droplet: a stable path by its name."""
    return f"/dev/disk/by-id/scsi-0DO_Volume_{volume_name}"


def generation_name(version: int) -> str:
    """The replication steps' component name: a blue/green upgrade's two generations of servers
    are told apart by the version they run."""
    return f"replication-pg{version}"


def tier_name(version: int) -> str:
    """The droplet tier's component name, by the version its droplets run (as generation_name)."""
    return f"db-pg{version}"
