"""The one loader of a stack's configuration (mastodon_data/stack_config.py): a command reads a
stack as the program does; the schema it types values with is the packaged Pulumi.yaml, read on
first use: importing the package reads no file beside its source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pulumi
import pytest
from program_harness import run_program

from mastodon_data import stack_config
from mastodon_data.config import PROJECT, ConfigError, parse_settings
from mastodon_data.config.project import read_schema
from tests.fixtures import DROPLETS, HOSTS, SECRETS

ROOT = Path(__file__).resolve().parents[2]


def listing(values: dict, secrets: dict | None = None, clear: dict | None = None) -> dict:
    """`pulumi config --json --show-secrets` of a stack: lists and maps as JSON text plus
    objectValue, other values as text; `clear`: secrets set without --secret."""
    shown = {}
    for key, value in {**values, **(clear or {})}.items():
        item = {"value": value if isinstance(value, str) else json.dumps(value), "secret": False}
        if isinstance(value, list | dict):
            item["objectValue"] = value
        shown[f"{PROJECT}:{key}"] = item
    for key, value in (secrets or {}).items():
        shown[f"{PROJECT}:{key}"] = {"value": value, "secret": True}
    return shown


def test_a_command_reads_a_stack_as_the_program_does():
    stack = {**HOSTS, "replicaCount": 1, "reseedReplicas": ["db2"]}
    loaded = stack_config.from_listing(listing(stack, SECRETS))
    assert loaded.settings == parse_settings(stack, set(SECRETS))
    assert loaded.secrets == SECRETS  # hosts mode needs the three, decrypted
    assert loaded.values == stack  # typed back from text (replicaCount "1" -> 1)
    assert loaded.reseed == frozenset({"db2"})


def test_other_namespaces_are_not_this_projects():
    shown = listing(DROPLETS, SECRETS) | {"digitalocean:token": {"value": "x", "secret": True}}
    assert stack_config.from_listing(shown).values == DROPLETS


def test_a_secret_set_in_clear_text_is_refused_without_showing_it():
    clear = {"dbPassword": SECRETS["dbPassword"]}
    secrets = {k: v for k, v in SECRETS.items() if k != "dbPassword"}
    with pytest.raises(ConfigError) as caught:
        stack_config.from_listing(listing(DROPLETS, secrets, clear))
    assert str(caught.value).startswith(f"{PROJECT}:dbPassword = [plain text]: ")
    assert SECRETS["dbPassword"] not in str(caught.value)


def test_every_problem_of_a_stack_at_once():
    stack = {**DROPLETS, "replicaCont": 2, "reseedReplicas": "db-1"}
    secrets = {**SECRETS, "replicationPassword": "tooShort9"}
    with pytest.raises(ConfigError) as caught:
        stack_config.from_listing(listing(stack, secrets))
    lines = str(caught.value).splitlines()
    assert [line.partition(" = ")[0] for line in lines] == [
        f"{PROJECT}:replicaCont",
        f"{PROJECT}:replicationPassword",
        f"{PROJECT}:reseedReplicas",
    ]
    assert "did you mean replicaCount?" in lines[0]
    assert "tooShort9" not in str(caught.value)


def test_the_program_refuses_a_project_of_another_name():
    with pytest.raises(pulumi.RunError, match="name the project mastodon-data") as caught:
        run_program(DROPLETS, project="mastodon")
    assert "(`name: mastodon-data` in Pulumi.yaml), not 'mastodon'" in str(caught.value)


def test_the_packaged_schema_is_the_projects_pulumi_yaml():
    packaged = resources.files("mastodon_data.config").joinpath("Pulumi.yaml").read_text()
    assert packaged == (ROOT / "Pulumi.yaml").read_text()
    assert read_schema(packaged)[0] == PROJECT


# Imports every module of the package (the host scripts are not modules of it) and lists the
# files opened meanwhile that are neither Python source nor bytecode.
IMPORT_ALL = """
import importlib, json, pkgutil, sys
opened = []
sys.addaudithook(lambda event, args: event == "open" and opened.append(str(args[0])))
import mastodon_data
for module in pkgutil.walk_packages(mastodon_data.__path__, "mastodon_data."):
    if not module.name.startswith(("mastodon_data.host", "mastodon_data.cli.__main__")):
        importlib.import_module(module.name)
print(json.dumps([path for path in opened if not path.endswith((".py", ".pyc"))]))
"""


def test_importing_the_package_reads_no_file(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL],
        cwd=tmp_path,  # a directory without Pulumi.yaml
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    opened = json.loads(result.stdout)
    # Third-party packages may read their own data (certificates, metadata); ours reads none.
    package = str(ROOT / "mastodon_data")
    assert [p for p in opened if p.startswith(package) or p.endswith("Pulumi.yaml")] == []
