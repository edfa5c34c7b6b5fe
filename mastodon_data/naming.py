"""Explicit names for DigitalOcean resources (no random suffixes). Pure."""

from __future__ import annotations

import re


def do_name(*parts: str) -> str:
    """`parts` joined with dashes as a DigitalOcean name: lower case, [a-z0-9-], at most 63."""
    text = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower())
    return re.sub(r"-{2,}", "-", text).strip("-")[:63].rstrip("-")
