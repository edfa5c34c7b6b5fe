"""The one loader of a stack's configuration, for the program and every command: the values as
Pulumi hands them over, typed by the schema and checked in one place (mastodon_data/config), so
every bad value stops the run with the key and the fix.

Two ways in, one check (`check`):
- The program (`load`): `pulumi.Config.get` for every key the project knows (Pulumi.yaml's
  settings, `hosts`, the operations switches, the secrets); `pulumi.runtime.is_config_secret`
  tells a secret from one set in clear text. Misspelt keys: the SDK has no public list of the
  keys a stack set, but the language host hands the program the whole configuration as JSON in
  PULUMI_CONFIG (the public `pulumi.runtime.get_config_env()`); a key of this project there
  that no setting has is reported. An Automation API inline program gets its configuration
  without that variable, so there a misspelt key goes unreported.
- A command (`from_listing`): `pulumi config --json --show-secrets` of the stack, which lists
  every key it set and whether it is a secret.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pulumi

from mastodon_data.config import (
    ALL_SECRET_KEYS,
    DEFAULTS,
    HOSTS_KEY,
    OPERATION_KEYS,
    PROJECT,
    RESEED_KEY,
    UPGRADE_KEY,
    ConfigError,
    Settings,
    decode,
    parse_settings,
    secret_problems,
)
from mastodon_data.monitoring import builds


@dataclass(frozen=True)
class StackConfig:
    """A stack's configuration, checked."""

    settings: Settings
    values: dict[str, Any]  # every plain value the stack sets, typed (for commands that edit)
    secrets: dict[str, str]  # the secrets the settings need, decrypted
    reseed: frozenset[str]  # replicas to re-seed from the primary on this run


def check(values: Mapping[str, Any], secret_keys: Collection[str]) -> StackConfig:
    """`values`: each key the stack sets (without the project prefix) as Pulumi hands it over,
    secrets decrypted; `secret_keys`: those set as secrets. One ConfigError lists every problem;
    a message names a secret's key, never its value."""
    plain = {key: decode(key, v) for key, v in values.items() if key not in ALL_SECRET_KEYS}
    for key in ALL_SECRET_KEYS:
        if key in values and key not in secret_keys:
            plain[key] = "[plain text]"  # parse_settings refuses it (and never shows the value)
    present = {key for key in ALL_SECRET_KEYS if key in values and key in secret_keys}
    problems = []
    try:
        settings = parse_settings(plain, present)
    except ConfigError as exc:
        problems += str(exc).splitlines()
    for key in sorted(present):
        problems += secret_problems(key, values[key] or "")
    reseed = plain.get(RESEED_KEY) or []
    if not isinstance(reseed, list) or not all(isinstance(n, str) for n in reseed):
        problems.append(
            f"{PROJECT}:{RESEED_KEY} = {reseed!r}: not a list of replica names. "
            f"Fix: pulumi config set --path '{PROJECT}:{RESEED_KEY}[0]' <replica name>"
        )
    if problems:
        raise ConfigError("\n".join(problems))
    # Only what this stack's modes need (managed PostgreSQL makes its own password).
    secrets = {key: values[key] for key in settings.required_secrets()}
    return StackConfig(settings, plain, secrets, frozenset(reseed))


def from_listing(listing: Mapping[str, Mapping[str, Any]]) -> StackConfig:
    """A command's stack: `listing` is `pulumi config --json --show-secrets` (by full key: the
    value, `objectValue` for a list or map, and whether it is a secret)."""
    prefix = f"{PROJECT}:"
    ours = {
        full.removeprefix(prefix): item for full, item in listing.items() if full.startswith(prefix)
    }
    values = {key: item.get("objectValue", item.get("value")) for key, item in ours.items()}
    return check(values, {key for key, item in ours.items() if item.get("secret")})


def load() -> tuple[Settings, dict[str, pulumi.Output], frozenset[str]]:
    """The program's stack: (settings, the secrets as Pulumi secret Outputs, replicas to
    re-seed), the warnings logged; a RunError listing every problem and its fix otherwise
    (shown without a traceback)."""
    if pulumi.get_project() != PROJECT:
        raise pulumi.RunError(
            f"this program's settings are {PROJECT}:<key>: name the project {PROJECT} "
            f"(`name: {PROJECT}` in Pulumi.yaml), not {pulumi.get_project()!r}"
        )
    config = pulumi.Config(PROJECT)
    known = (*DEFAULTS, HOSTS_KEY, UPGRADE_KEY, *OPERATION_KEYS, *ALL_SECRET_KEYS)
    values = {key: config.get(key) for key in known} | _unknown_keys(known)
    values = {key: value for key, value in values.items() if value is not None}
    secret_keys = {key for key in values if pulumi.runtime.is_config_secret(f"{PROJECT}:{key}")}
    try:
        loaded = check(values, secret_keys)
        settings = with_exporter_builds(loaded.settings)
    except ConfigError as problems:
        raise pulumi.RunError(f"invalid stack configuration:\n{problems}") from None
    for warning in settings.warnings:
        pulumi.log.warn(warning)
    secrets = {key: pulumi.Output.secret(value) for key, value in loaded.secrets.items()}
    return settings, secrets, loaded.reseed


def with_exporter_builds(settings: Settings) -> Settings:
    """The program's settings with the upstream exporters it ships (read from exportersHome):
    the program's alone, as a command ships nothing."""
    replication = settings.replication
    if replication is None or not replication.monitoring_sources:
        return settings
    shipped = replace(replication, exporter_builds=builds.locate(replication))
    return replace(settings, replication=shipped)


def _unknown_keys(known: Collection[str]) -> dict[str, str]:
    """This project's keys in the language host's PULUMI_CONFIG that no setting has."""
    prefix = f"{PROJECT}:"
    return {
        name: text
        for full, text in pulumi.runtime.get_config_env().items()
        if full.startswith(prefix) and (name := full.removeprefix(prefix)) not in known
    }
