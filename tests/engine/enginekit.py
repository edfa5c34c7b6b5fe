"""The real Pulumi engine for tests: the project's .engine/bin, a file backend and passphrase in a
temporary directory, and the real program run inline (an inline program needs no language host).
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
STATUS = ROOT / ".engine" / "status.json"


def missing(*components: str) -> str | None:
    """Why the engine lacks one of `components` (cli, language-python, command), or None."""
    if not STATUS.exists():
        return "the engine is not bootstrapped (make engine)"
    status = json.loads(STATUS.read_text())
    gaps = [
        f"{name}: {status.get(name, {}).get('detail') or 'not built'}"
        for name in components
        if status.get(name, {}).get("state") != "ok"
    ]
    return "; ".join(gaps) or None


def workspace(tmp: Path, stack: str, config: dict[str, object], secrets: dict[str, str]):
    """A stack of this project in `tmp` with the given configuration."""
    from pulumi import automation as auto

    shutil.copy(ROOT / "Pulumi.yaml", tmp / "Pulumi.yaml")
    (tmp / "state").mkdir(exist_ok=True)
    env = {
        "PULUMI_BACKEND_URL": f"file://{tmp / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "engine-test-passphrase",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_HOME": str(tmp / "home"),
        "PATH": f"{ROOT / '.engine' / 'bin'}:{os.environ['PATH']}",
    }
    os.environ["PATH"] = env["PATH"]  # the Automation API looks the CLI up on PATH

    def program():
        runpy.run_path(str(ROOT / "__main__.py"))

    # Plain values typed as an operator's stack file holds them; secrets through the CLI.
    document = {"config": {f"mastodon-data:{k}": v for k, v in config.items()}}
    stack_file = tmp / f"Pulumi.{stack}.yaml"
    if stack_file.exists():  # a re-configured stack keeps the salt its secrets were made with
        salt = (yaml.safe_load(stack_file.read_text()) or {}).get("encryptionsalt")
        if salt:
            document["encryptionsalt"] = salt
    stack_file.write_text(yaml.safe_dump(document))
    ws = auto.LocalWorkspaceOptions(work_dir=str(tmp), env_vars=env, pulumi_home=env["PULUMI_HOME"])
    st = auto.create_or_select_stack(stack, "mastodon-data", program, opts=ws)
    for key, value in secrets.items():
        st.set_config(f"mastodon-data:{key}", auto.ConfigValue(value, secret=True))
    return st
