"""Reads the stack's configuration through Pulumi and validates it in one place
(components/config.py), so every bad value stops the preview with the key and the fix."""

from __future__ import annotations

import json

import pulumi

from components.config import (
    DEFAULTS,
    PROJECT,
    SECRET_KEYS,
    ConfigError,
    Settings,
    parse_settings,
    secret_problems,
)

# Keys outside the validated model (operations switches).
RESEED_KEY = "reseedReplicas"


def _raw_value(config: pulumi.Config, key: str, default):
    text = config.get(key)
    if text is None or isinstance(default, str):
        return text
    try:
        return json.loads(text)  # arrays, objects and numbers arrive as JSON text
    except ValueError:
        return text  # parse_settings names the key and says what it should be


def load() -> tuple[Settings, dict[str, pulumi.Output], frozenset[str]]:
    """(settings, secrets as Pulumi secret Outputs, replicas to re-seed)."""
    config = pulumi.Config(PROJECT)
    raw = {
        key: value
        for key in [*DEFAULTS, "hosts"]
        if (value := _raw_value(config, key, DEFAULTS.get(key, []))) is not None
    }
    present = {key for key in SECRET_KEYS if config.get_secret(key) is not None}
    settings = parse_settings(raw, present)
    problems = []
    for key in SECRET_KEYS:
        # Plain text only for the check, never logged; messages name the key, not the value.
        problems += secret_problems(key, pulumi.runtime.get_config(f"{PROJECT}:{key}") or "")
    if problems:
        raise ConfigError("\n".join(problems))
    secrets = {key: config.require_secret(key) for key in SECRET_KEYS}
    reseed = _raw_value(config, RESEED_KEY, []) or []
    if not isinstance(reseed, list) or not all(isinstance(n, str) for n in reseed):
        raise ConfigError(
            f"{PROJECT}:{RESEED_KEY} = {reseed!r}: not a list of replica names. "
            f"Fix: pulumi config set --path '{RESEED_KEY}[0]' <replica name>"
        )
    return settings, secrets, frozenset(reseed)
