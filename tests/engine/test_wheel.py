"""The package as an operator installs it. The wheel, built from a copy of the sources, goes into
a new venv outside the source tree (`pip install <wheel> -r requirements.txt`: the versions
`make` pins, from pip's cache or PyPI). Its `mastodon-data` commands answer, and the program
previews stacks through the real engine in project directories that hold no source of this
repository: Pulumi.yaml, the stack file, the two-line __main__.py and a link to the venv.
prod's project has a copy of this Pulumi.yaml; dev's only a name and a runtime, so the defaults
are the package's (and the engine's schema checks are off)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from enginekit import OFFLINE_DIGITALOCEAN, SECRETS, example_config

from lab.stack import ROOT, LabStack, write_private
from mastodon_data.cli import COMMANDS

pytestmark = pytest.mark.engine
MAIN = "from mastodon_data.program import run\n\nrun()\n"
NAME_AND_RUNTIME = """name: mastodon-data
runtime:
  name: python
  options:
    toolchain: pip
    virtualenv: venv
"""
INSTALLED = "project:///venv/lib/python3.11/site-packages/mastodon_data/"


def run(*argv, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, **kwargs)  # fmt: skip


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: a build writes build/ and *.egg-info beside the sources
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "Pulumi.yaml", source)  # the package's schema links to it
    shutil.copytree(ROOT / "mastodon_data", source / "mastodon_data", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    built = run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", source)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("*.whl")
    venv = tmp / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    pip = (venv / "bin" / "python", "-m", "pip", "install", "-q")
    installed = run(*pip, wheel, "-r", ROOT / "requirements.txt")
    assert installed.returncode == 0, installed.stderr
    return venv


class ProjectStack(LabStack):
    """A stack in an operator's project directory: no link into this repository."""

    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("PYTHONPATH", None)  # the program finds the package in the venv only
        return env


def project_stack(venv: Path, workdir: Path, name: str, project_file: str) -> ProjectStack:
    (workdir / "backend").mkdir(parents=True)
    (workdir / "Pulumi.yaml").write_text(project_file)
    (workdir / "__main__.py").write_text(MAIN)
    (workdir / "venv").symlink_to(venv)
    stack = ProjectStack(name, workdir)
    stack.extra_env.update(OFFLINE_DIGITALOCEAN)
    write_private(stack.passphrase, "a passphrase of this test's own")
    stack.pulumi("stack", "init", name, "--secrets-provider", "passphrase", stack=False)
    config = example_config(name)
    stack.configure(config, SECRETS if config.get("postgresMode") != "managed" else {})
    return stack


def preview(stack: ProjectStack) -> dict:
    return json.loads(stack.preview("--json"))


def made_by_the_installed_package(result: dict) -> bool:
    """Every component of this project was registered by code in the venv (each step's
    source position), the program's run() among them."""
    files = {
        step["newState"]["sourcePosition"].partition("#")[0]
        for step in result["steps"]
        if step["newState"]["type"].startswith("mastodon-data:")
    }
    return f"{INSTALLED}program.py" in files and all(f.startswith(INSTALLED) for f in files)


def test_every_command_answers_from_the_new_venv(venv):
    listed = run(venv / "bin" / "mastodon-data", "--help", timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[3:]] == list(COMMANDS)
    for name in COMMANDS:
        answer = run(venv / "bin" / "mastodon-data", name, "--help", timeout=60)
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.startswith(f"usage: mastodon-data {name} "), answer.stdout


def test_prod_previews_with_a_copy_of_pulumi_yaml(venv, tmp_path):
    stack = project_stack(venv, tmp_path / "prod", "prod", (ROOT / "Pulumi.yaml").read_text())
    result = preview(stack)
    assert result["changeSummary"] == {"create": 22}  # with the upgrade rehearsal's command
    assert made_by_the_installed_package(result)


def test_dev_previews_with_the_packages_defaults_as_with_the_schema(venv, tmp_path):
    """The same resources with the same inputs, whether the engine or the package applies
    Pulumi.yaml's defaults; a command of the venv reads the stack through `pulumi config`."""
    bare = project_stack(venv, tmp_path / "bare", "dev", NAME_AND_RUNTIME)
    full = project_stack(venv, tmp_path / "full", "dev", (ROOT / "Pulumi.yaml").read_text())
    results = [preview(bare), preview(full)]
    assert [r["changeSummary"] for r in results] == [{"create": 24}] * 2  # 2 health steps
    inputs = [{s["urn"]: s["newState"].get("inputs") for s in r["steps"]} for r in results]
    assert inputs[0] == inputs[1]
    assert made_by_the_installed_package(results[0])
    assert not [d for d in results[0]["diagnostics"] if "made later" in d["message"]]
    backups = run(venv / "bin" / "mastodon-data", "backups", "--stack", "dev", "--cwd",
                  bare.workdir, "check", env=bare.env(), timeout=120)  # fmt: skip
    assert (backups.returncode, backups.stderr) == (
        1, "error: backups are off in this stack (mastodon-data:backups)\n"
    )  # fmt: skip
