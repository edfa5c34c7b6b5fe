"""Reads the stack's configuration through Pulumi and validates it in one place
(components/config.py), so every bad value stops the preview with the key and the fix."""

from __future__ import annotations

import json

import pulumi

from components.config import (
    ALL_SECRET_KEYS,
    DEFAULTS,
    PROJECT,
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


def _stack_keys() -> set[str]:
    """Every configuration key the engine handed to this run (the SDK keeps no public list)."""
    from pulumi.runtime.config import CONFIG

    return set(CONFIG.get()) | set(pulumi.runtime.get_config_env())


def load() -> tuple[Settings, dict[str, pulumi.Output], frozenset[str]]:
    """(settings, secrets as Pulumi secret Outputs, replicas to re-seed); one ConfigError listing
    every problem otherwise."""
    config = pulumi.Config(PROJECT)
    # Every key of this project in the stack, so a misspelt key is reported too.
    names = {full.partition(":")[2] for full in _stack_keys() if full.startswith(f"{PROJECT}:")}
    raw = {
        key: _raw_value(config, key, DEFAULTS.get(key, [])) for key in names - set(ALL_SECRET_KEYS)
    }
    present = {key for key in ALL_SECRET_KEYS if key in names}
    problems = []
    try:
        settings = parse_settings(raw, present)
    except ConfigError as exc:
        problems += str(exc).splitlines()
    for key in sorted(present):
        # Plain text only for the check, never logged; messages name the key, not the value.
        problems += secret_problems(key, pulumi.runtime.get_config(f"{PROJECT}:{key}") or "")
    reseed = raw.get(RESEED_KEY) or []
    if not isinstance(reseed, list) or not all(isinstance(n, str) for n in reseed):
        problems.append(
            f"{PROJECT}:{RESEED_KEY} = {reseed!r}: not a list of replica names. "
            f"Fix: pulumi config set --path '{PROJECT}:{RESEED_KEY}[0]' <replica name>"
        )
    if problems:
        raise ConfigError("\n".join(problems))
    # Only what this stack's modes need (managed PostgreSQL makes its own password).
    secrets = {key: config.require_secret(key) for key in settings.required_secrets()}
    return settings, secrets, frozenset(reseed)
