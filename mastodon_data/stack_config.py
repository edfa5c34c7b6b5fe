"""Reads the stack's configuration through Pulumi's public API and validates it in one place
(mastodon_data/config), so every bad value stops the preview with the key and the fix.

- Values: `pulumi.Config.get` for every key the project knows (Pulumi.yaml's settings, `hosts`,
  the operations switches), typed by the schema (mastodon_data.config.decode, as the tools do).
- Secrets: `pulumi.runtime.is_config_secret` tells a secret from one set in clear text.
- Misspelt keys: the SDK has no public list of the keys a stack set. The language host hands
  the program the whole configuration as JSON in PULUMI_CONFIG, read with the public
  `pulumi.runtime.get_config_env()`; a key of this project there that no setting has is
  reported. An Automation API inline program gets its configuration without that variable, so
  there a misspelt key goes unreported (the stack file is still checked by `pulumi preview`).
"""

from __future__ import annotations

from typing import Any

import pulumi

from mastodon_data.config import (
    ALL_SECRET_KEYS,
    DEFAULTS,
    HOSTS_KEY,
    OPERATION_KEYS,
    PROJECT,
    RESEED_KEY,
    ConfigError,
    Settings,
    decode,
    parse_settings,
    secret_problems,
)

KNOWN_KEYS = (*DEFAULTS, HOSTS_KEY, *OPERATION_KEYS)


def _unknown_keys() -> dict[str, Any]:
    """This project's keys in the language host's PULUMI_CONFIG that no setting has."""
    prefix = f"{PROJECT}:"
    return {
        name: decode(name, text)
        for full, text in pulumi.runtime.get_config_env().items()
        if full.startswith(prefix)
        and (name := full.removeprefix(prefix)) not in KNOWN_KEYS
        and name not in ALL_SECRET_KEYS
    }


def _read(config: pulumi.Config) -> tuple[dict[str, Any], set[str]]:
    """(plain values by key, names of the secrets set as secrets)."""
    raw = {key: decode(key, config.get(key)) for key in KNOWN_KEYS}
    raw = {key: value for key, value in raw.items() if value is not None} | _unknown_keys()
    present = set()
    for key in ALL_SECRET_KEYS:
        if config.get(key) is None:
            continue
        if pulumi.runtime.is_config_secret(f"{PROJECT}:{key}"):
            present.add(key)
        else:
            raw[key] = "[plain text]"  # parse_settings refuses it (and never shows the value)
    return raw, present


def load() -> tuple[Settings, dict[str, pulumi.Output], frozenset[str]]:
    """(settings, secrets as Pulumi secret Outputs, replicas to re-seed), the warnings logged; a
    RunError listing every problem and its fix otherwise (shown without a traceback)."""
    try:
        settings, secrets, reseed = read()
    except ConfigError as problems:
        raise pulumi.RunError(f"invalid stack configuration:\n{problems}") from None
    for warning in settings.warnings:
        pulumi.log.warn(warning)
    return settings, secrets, reseed


def read() -> tuple[Settings, dict[str, pulumi.Output], frozenset[str]]:
    """As load(), but one ConfigError listing every problem."""
    config = pulumi.Config(PROJECT)
    raw, present = _read(config)
    problems = []
    try:
        settings = parse_settings(raw, present)
    except ConfigError as exc:
        problems += str(exc).splitlines()
    for key in sorted(present):
        # Plain text only for the check, never logged; messages name the key, not the value.
        problems += secret_problems(key, config.get(key) or "")
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
