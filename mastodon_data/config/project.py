"""Pulumi.yaml, read once: the project's name and each setting's type and default.

The engine applies the same defaults to a stack that leaves a key unset; the tools that read a
stack file without the engine get them from here, so no default is written twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

PROJECT_FILE = Path(__file__).resolve().parents[2] / "Pulumi.yaml"


def load_project(path: Path = PROJECT_FILE) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(project name, {key: type}, {key: default}) from the `config:` schema of `path`."""
    document = yaml.safe_load(path.read_text()) or {}
    schema = document.get("config") or {}
    types = {key: spec.get("type", "string") for key, spec in schema.items()}
    defaults = {key: spec.get("default") for key, spec in schema.items()}
    return document["name"], types, defaults


PROJECT, TYPES, DEFAULTS = load_project()


def decode(key: str, value: Any) -> Any:
    """A setting as the engine hands it over (text), typed by the schema: JSON for every type but
    string, and for keys the schema cannot type (hosts, the operations switches). Text that is
    not JSON stays text: the validation names the key and says what it should be."""
    if not isinstance(value, str) or TYPES.get(key) == "string":
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value
