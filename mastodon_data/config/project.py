"""The project's name, and each setting's type and default from the `config:` schema of
Pulumi.yaml as the package carries it (mastodon_data/config/Pulumi.yaml, a link to the
repository's own), read on first use, never at import.

The package's copy, not the project directory's: the defaults belong to the code that reads
them, so the program and every command agree whatever the operator's Pulumi.yaml holds (the full
schema, an older copy, or only the name and runtime). The engine applies the same defaults to a
stack that leaves a key unset when the project's Pulumi.yaml carries the schema.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

import yaml

# Every setting is `mastodon-data:<key>`: a project of another name would find none of them.
PROJECT = "mastodon-data"


def read_schema(text: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(project name, {key: type}, {key: default}) from the text of a Pulumi.yaml."""
    document = yaml.safe_load(text) or {}
    schema = document.get("config") or {}
    types = {key: spec.get("type", "string") for key, spec in schema.items()}
    defaults = {key: spec.get("default") for key, spec in schema.items()}
    return document.get("name"), types, defaults


@functools.cache
def _packaged_schema() -> tuple[dict[str, str], dict[str, Any]]:
    _, types, defaults = read_schema(
        resources.files(__package__).joinpath("Pulumi.yaml").read_text()
    )
    return types, defaults


class _SchemaColumn(Mapping[str, Any]):
    """{key: type} or {key: default}: a read-only mapping that reads the schema when first used."""

    def __init__(self, column: int) -> None:
        self._column = column

    def _values(self) -> dict[str, Any]:
        return _packaged_schema()[self._column]

    def __getitem__(self, key: str) -> Any:
        return self._values()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())

    def __repr__(self) -> str:
        return repr(self._values())


TYPES: Mapping[str, str] = _SchemaColumn(0)
DEFAULTS: Mapping[str, Any] = _SchemaColumn(1)


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
