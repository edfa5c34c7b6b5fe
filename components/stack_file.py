"""Reads a stack's settings from `Pulumi.<stack>.yaml` without the engine (for the direct runner
and the tests): plain values only; secure values are only noted as present."""

from __future__ import annotations

from pathlib import Path

import yaml

from components.config import PROJECT


def read_stack_file(path: Path) -> tuple[dict, set[str]]:
    """(raw settings keyed like Pulumi.yaml, names of secrets set in the file)."""
    document = yaml.safe_load(path.read_text()) or {}
    raw, secrets = {}, set()
    for key, value in (document.get("config") or {}).items():
        namespace, _, name = key.partition(":")
        if namespace != PROJECT:
            continue
        if isinstance(value, dict) and "secure" in value:
            secrets.add(name)
        else:
            raw[name] = value
    return raw, secrets
