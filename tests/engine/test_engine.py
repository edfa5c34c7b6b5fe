"""Through the real Pulumi engine: the CLI, the Python language host and the real providers."""

from __future__ import annotations

import pytest
from enginekit import DROPLETS, SECRETS, engine_stack, example_config

pytestmark = pytest.mark.engine


def preview_error(stack) -> str:
    stack.preview(check=False)
    assert stack.last.returncode != 0, stack.last.stdout
    return stack.last.stdout + stack.last.stderr


def test_bad_value_stops_the_preview_with_key_and_fix(tmp_path):
    stack = engine_stack(tmp_path, "bad", {**DROPLETS, "adminCidrs": ["0.0.0.0/0"]}, SECRETS)
    error = preview_error(stack)
    assert "mastodon-data:adminCidrs[0] = '0.0.0.0/0'" in error
    assert "Fix:" in error
    assert "Traceback" not in error


def test_missing_secret_stops_the_preview_with_the_command_to_set_it(tmp_path):
    secrets = {k: v for k, v in SECRETS.items() if k != "dbPassword"}
    error = preview_error(engine_stack(tmp_path, "nosecret", DROPLETS, secrets))
    assert 'pulumi config set --secret mastodon-data:dbPassword "$(openssl rand -base64 32)"' in (
        error
    )


def test_config_schema_types_are_enforced_by_the_engine(tmp_path):
    error = preview_error(
        engine_stack(tmp_path, "types", {**DROPLETS, "replicaCount": "two"}, SECRETS)
    )
    assert "replicaCount" in error


def test_secrets_are_encrypted_in_the_stack_file(tmp_path):
    stack = engine_stack(tmp_path, "enc", DROPLETS, SECRETS)
    text = stack.config_file.read_text()
    for value in SECRETS.values():
        assert value.strip() not in text
    assert "secure:" in text


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_example_stacks_preview_with_the_real_digitalocean_provider(tmp_path, name):
    """The engine hands the program Pulumi.yaml's defaults as set values: the example stacks
    must still validate, and the real provider must accept every resource's inputs."""
    config = example_config(name)
    secrets = SECRETS if config.get("postgresMode", "droplets") != "managed" else {}
    stack = engine_stack(tmp_path, name, config, secrets)
    out = stack.preview("--diff")
    assert "invalid stack configuration" not in out
    assert " to create" in out
