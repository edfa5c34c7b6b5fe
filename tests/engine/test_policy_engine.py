"""The policy pack and quiet previews through the real Pulumi CLI.

Runs here (the CLI is built): the real program through the CLI's Automation API, with
- the policy pack launched as a binary analyzer (a CLI given a path to an executable as
  `--policy-pack` starts it like a provider and reads its port; policy/__main__.py prints it), so
  no Python language host is needed;
- stand-in providers for digitalocean and command (tests/engine/standin_provider.py: every
  input accepted, old inputs diffed against new ones, a few computed outputs), since the real
  plugins cannot be built or fetched here.
It proves that the pack loads in the engine, passes the lab (hosts) and droplets stacks, refuses
a deliberately bad configuration naming the policy, and that a second preview after `up` shows
no changes (the program's half of quiet previews).

Skipped here, run where the engine is complete (CI on GitHub): the same with the pack as a
directory (`--policy-pack policy`, what the workflows do; needs the Python language host) and the
real providers, where quiet previews also cover what the providers report back.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from enginekit import ROOT, missing, workspace
from test_engine import DROPLETS, SECRETS

pytestmark = pytest.mark.engine

POLICY = ROOT / "policy"
ALLOWED = ["198.51.100.0/24"]  # the pack's allowedCidrs; DROPLETS' admin is 198.51.100.7/32
BAD_ADMIN = "203.0.113.9/32"  # fine for the program (a /32), not an address the pack allows


def need(*components: str) -> None:
    reason = missing(*components)
    if reason:
        pytest.skip(f"needs the engine's {', '.join(components)}: {reason}")


def pack_config(tmp: Path, allowed: list[str]) -> str:
    document = json.loads((POLICY / "config.json").read_text())
    document["ssh-only-from-admin-cidrs"]["allowedCidrs"] = allowed
    path = tmp / "policy-config.json"
    path.write_text(json.dumps(document))
    return str(path)


def lab_config() -> dict:
    document = yaml.safe_load((ROOT / "Pulumi.lab.yaml").read_text())["config"]
    return {k.split(":", 1)[1]: v for k, v in document.items() if k.startswith("mastodon-data:")}


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def standins(tmp_path) -> Path:
    """Stand-in providers (in tmp_path/standin-bin); returns the pack as an executable analyzer."""
    need("cli")
    bin_dir = tmp_path / "standin-bin"
    bin_dir.mkdir()
    helper = ROOT / "tests" / "engine" / "standin_provider.py"
    for name, version in (("digitalocean", "4.84.1"), ("command", "1.2.1")):
        executable(
            bin_dir / f"pulumi-resource-{name}",
            f'#!/bin/sh\nexec "{sys.executable}" -u "{helper}" {name} {version} "$@"\n',
        )
    return executable(
        tmp_path / "mastodon-data-policy",
        f'#!/bin/sh\ncd "{POLICY}" && exec "{sys.executable}" -u __main__.py\n',
    )


def standin_stack(tmp: Path, name: str, config: dict):
    """A stack whose engine finds the stand-ins first on PATH (before any real plugin)."""
    stack = workspace(tmp, name, config, SECRETS)
    env = stack.workspace.env_vars
    env["PATH"] = f"{tmp / 'standin-bin'}:{env['PATH']}"
    return stack


@pytest.mark.parametrize("mode", ["lab", "droplets"])
def test_pack_passes_the_stack_and_a_second_preview_is_quiet(standins, tmp_path, mode):
    stack = standin_stack(tmp_path, mode, lab_config() if mode == "lab" else DROPLETS)
    packs = {
        "policy_packs": [str(standins)],
        "policy_pack_configs": [pack_config(tmp_path, ALLOWED)],
    }
    first = stack.preview(**packs)
    assert "mastodon-data" in first.stdout  # the pack ran; a violation would have raised
    stack.up(**packs)
    quiet = stack.preview(expect_no_changes=True, diff=True, **packs)
    assert set(quiet.change_summary) == {"same"}, quiet.stdout


def test_pack_refuses_a_bad_config_through_the_engine(standins, tmp_path):
    from pulumi import automation as auto

    stack = standin_stack(tmp_path, "badadmin", {**DROPLETS, "adminCidrs": [BAD_ADMIN]})
    with pytest.raises(auto.errors.CommandError) as caught:
        stack.preview(
            policy_packs=[str(standins)], policy_pack_configs=[pack_config(tmp_path, ALLOWED)]
        )
    error = str(caught.value)
    assert "[mandatory]  ssh-only-from-admin-cidrs" in error
    assert f"opens SSH (port 22) to {BAD_ADMIN}" in error


# --- with the complete engine (skipped on the development machine) ---------------------------


def pack_venv() -> None:
    """policy/venv as PulumiPolicy.yaml names it (the CI workflows create it the same way)."""
    python = POLICY / "venv" / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(POLICY / "venv")], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(POLICY / "requirements.txt")],
        check=True,
        timeout=600,
    )


def test_lab_stack_passes_the_pack_directory(tmp_path):
    need("cli", "language-python", "command")
    pack_venv()
    stack = workspace(tmp_path, "lab", lab_config(), SECRETS)
    result = stack.preview(
        policy_packs=[str(POLICY)], policy_pack_configs=[pack_config(tmp_path, ALLOWED)]
    )
    assert "mastodon-data" in result.stdout


def test_bad_config_is_refused_with_the_real_providers(tmp_path):
    need("cli", "language-python", "command")
    search = f"{ROOT / '.engine' / 'bin'}:{os.environ['PATH']}"
    if not shutil.which("pulumi-resource-digitalocean", path=search):
        pytest.skip(
            "the DigitalOcean provider plugin (pulumi-resource-digitalocean) is not on PATH"
        )
    pack_venv()
    from pulumi import automation as auto

    stack = workspace(tmp_path, "badadmin", {**DROPLETS, "adminCidrs": [BAD_ADMIN]}, SECRETS)
    with pytest.raises(auto.errors.CommandError) as caught:
        stack.preview(
            policy_packs=[str(POLICY)], policy_pack_configs=[pack_config(tmp_path, ALLOWED)]
        )
    assert "ssh-only-from-admin-cidrs" in str(caught.value)


def test_lab_stack_preview_after_a_real_up_shows_no_changes():
    """On the lab itself: `pulumi up -s lab` (scripts/lab_main.py), then a preview that must
    propose nothing, including what pulumi-command reports back (connection, stdout)."""
    need("cli", "command")
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces)")
    sys.path.insert(0, str(ROOT / "scripts"))
    import lab as lab_hosts
    import lab_main
    from pulumi import automation as auto

    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lab_main.py")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    env = {
        "PULUMI_BACKEND_URL": f"file://{ROOT / '.pulumi-state'}",
        "PULUMI_CONFIG_PASSPHRASE_FILE": str(lab_hosts.lab_from_env().state_dir / "passphrase"),
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PATH": f"{ROOT / '.engine' / 'bin'}:{os.environ['PATH']}",
    }
    stack = auto.select_stack(
        lab_main.STACK,
        "mastodon-data",
        lambda: runpy.run_path(str(ROOT / "__main__.py")),
        opts=auto.LocalWorkspaceOptions(work_dir=str(ROOT), env_vars=env),
    )
    packs = {}
    if missing("language-python") is None:
        pack_venv()
        packs = {"policy_packs": [str(POLICY)]}
    preview = stack.preview(expect_no_changes=True, diff=True, **packs)
    assert set(preview.change_summary) == {"same"}, preview.stdout
