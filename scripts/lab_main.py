#!/usr/bin/env python3
"""The main job on the built-in lab (`make lab`): lab hosts up, the `lab` stack applied (through
the Pulumi engine when all of it is installed, else the same steps directly over ssh), then
`.env.production` rendered from the outputs and the replication check run.

    python3 scripts/lab_main.py [--hosts N] [--env-file PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import apply_hosts  # noqa: E402
import lab as lab_hosts  # noqa: E402

STACK = "lab"
ENGINE_STATUS = ROOT / ".engine" / "status.json"


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def lab_secrets(lab: lab_hosts.Lab) -> dict:
    """Per-lab secrets (0600 in the lab's directory): the lab key and two random passwords."""
    path = lab.state_dir / "secrets.json"
    if not path.exists():
        write_private(
            path,
            json.dumps(
                {
                    "sshPrivateKey": lab.private_key.read_text(),
                    "replicationPassword": secrets.token_urlsafe(24),
                    "dbPassword": secrets.token_urlsafe(24),
                }
            ),
        )
    return json.loads(path.read_text())


def engine_gap() -> str | None:
    """Why the engine cannot run the lab stack here, or None when it can."""
    if not ENGINE_STATUS.exists():
        return "the engine is not bootstrapped (run `make engine`)"
    status = json.loads(ENGINE_STATUS.read_text())
    missing = [
        f"{name} ({status[name]['detail'] or 'unavailable'})"
        for name in ("cli", "command")
        if status.get(name, {}).get("state") != "ok"
    ]
    return "; ".join(missing) or None


def up_with_engine(lab: lab_hosts.Lab, values: dict) -> dict:
    """`pulumi up -s lab` through the Automation API with the real program (an inline program
    needs no language host). Secrets go into the stack's config as Pulumi secrets."""
    from pulumi import automation as auto

    passphrase = lab.state_dir / "passphrase"
    if not passphrase.exists():
        write_private(passphrase, secrets.token_urlsafe(32))
    state = ROOT / ".pulumi-state"
    state.mkdir(exist_ok=True)
    env = {
        "PULUMI_BACKEND_URL": f"file://{state}",
        "PULUMI_CONFIG_PASSPHRASE_FILE": str(passphrase),
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PATH": f"{ROOT / '.engine' / 'bin'}:{os.environ['PATH']}",
    }
    stack = auto.create_or_select_stack(
        STACK,
        "mastodon-data",
        lambda: runpy.run_path(str(ROOT / "__main__.py")),
        opts=auto.LocalWorkspaceOptions(work_dir=str(ROOT), env_vars=env),
    )
    for key, value in values.items():
        stack.set_config(f"mastodon-data:{key}", auto.ConfigValue(value, secret=True))
    stack.up(on_output=print)
    return {key: out.value for key, out in stack.outputs().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--env-file", type=Path, default=ROOT / ".env.production")
    args = parser.parse_args(argv)
    lab = lab_hosts.lab_from_env()
    try:
        lab_hosts.up(lab, args.hosts)
    except lab_hosts.LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    values = lab_secrets(lab)
    gap = engine_gap()
    if gap is None:
        outputs = up_with_engine(lab, values)
    else:
        print(
            f"note: the Pulumi engine cannot run remote commands here: {gap}.\n"
            "      Running the lab stack's steps directly over ssh instead "
            "(same scripts, parameters and order).",
            file=sys.stderr,
        )
        try:
            outputs = apply_hosts.apply(ROOT / f"Pulumi.{STACK}.yaml", values, lab.known_hosts)
        except (apply_hosts.ConfigError, apply_hosts.StepFailed) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    document = json.dumps(outputs, indent=2, sort_keys=True)
    write_private(lab.state_dir / "outputs.json", document)
    shown = {**outputs, "mastodon_env": "[secret]"}
    print(json.dumps(shown, indent=2, sort_keys=True))
    for script, extra in (
        ("render_env.py", ["--output", str(args.env_file)]),
        ("check_replication.py", []),
    ):
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / script), *extra],
            input=document,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
