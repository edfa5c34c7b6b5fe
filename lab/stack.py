"""A stack of this project run by the real Pulumi CLI in a private working directory (lab, tests).

The directory holds links to the project (Pulumi.yaml, the program, the venv), a generated
`Pulumi.<stack>.yaml`, a file backend, a PULUMI_HOME and a passphrase (0600), so nothing tracked
in the clone is ever written and removing the directory removes every trace of the stack.
Secrets go into the stack with `pulumi config set --secret` on stdin, never on a command line.
"""

from __future__ import annotations

import json
import os
import secrets as random
from pathlib import Path

import yaml

from mastodon_data.pulumi_cli import (  # noqa: F401 (PulumiFailed re-exported)
    PROJECT,
    PulumiFailed,
    Stack,
)

ROOT = Path(__file__).resolve().parent.parent
ENGINE_BIN = ROOT / ".engine" / "bin"
ENGINE_STATUS = ROOT / ".engine" / "status.json"
# What the engine needs: the project file, the program and its package, the host scripts the
# steps ship, the venv (the program's interpreter) and the policy pack.
PROJECT_LINKS = ("Pulumi.yaml", "__main__.py", "mastodon_data", "venv", "policy")
COMPONENTS = ("cli", "language-python", "command", "digitalocean")


class EngineMissing(RuntimeError):
    """The Pulumi engine is not installed; the message says how to get it."""


def engine_gap(components: tuple[str, ...] = COMPONENTS) -> str | None:
    """Why the engine cannot run here (missing components), or None when it can."""
    if not ENGINE_STATUS.exists():
        return "the engine is not bootstrapped: run `make engine`"
    status = json.loads(ENGINE_STATUS.read_text())
    gaps = [
        f"{name}: {status.get(name, {}).get('detail') or 'not built'}"
        for name in components
        if status.get(name, {}).get("state") != "ok"
    ]
    return "; ".join(gaps) or None


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


class LabStack(Stack):
    """Stack `name` of this project in its own working directory `workdir`."""

    def __init__(self, name: str, workdir: Path, timeout: float = 1800):
        self.workdir, self.passphrase = workdir, workdir / "passphrase"
        super().__init__(
            name,
            workdir,
            {
                "PATH": f"{ENGINE_BIN}:{os.environ['PATH']}",
                "PULUMI_BACKEND_URL": f"file://{workdir / 'backend'}",
                "PULUMI_CONFIG_PASSPHRASE_FILE": str(self.passphrase),
                "PULUMI_HOME": str(workdir / "home"),
                "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            },
            timeout,
        )

    @property
    def config_file(self) -> Path:
        return self.workdir / f"Pulumi.{self.name}.yaml"

    def prepare(self) -> None:
        """The working directory with links to the project and the stack created (idempotent)."""
        gap = engine_gap()
        if gap:
            raise EngineMissing(f"the Pulumi engine is incomplete ({gap}); run `make engine`")
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.workdir / "backend").mkdir(exist_ok=True)
        for entry in self.workdir.iterdir():
            if entry.is_symlink() and entry.name not in PROJECT_LINKS:
                entry.unlink()  # a link of an earlier layout (components, scripts)
        for name in PROJECT_LINKS:
            link = self.workdir / name
            if not link.is_symlink():
                link.symlink_to(ROOT / name)
        if not self.passphrase.exists():
            write_private(self.passphrase, random.token_urlsafe(32))
        listed = json.loads(self.pulumi("stack", "ls", "--json", stack=False) or "[]")
        if self.name not in {s["name"] for s in listed}:
            self.pulumi("stack", "init", self.name, "--secrets-provider", "passphrase", stack=False)

    def configure(self, config: dict, secrets: dict[str, str]) -> None:
        """Replaces the stack's configuration: `config` keys without the project prefix."""
        salt = (yaml.safe_load(self.config_file.read_text()) or {}).get("encryptionsalt")
        document = {"config": {f"{PROJECT}:{k}": v for k, v in config.items()}}
        if salt:  # the secrets of this stack were made with it
            document["encryptionsalt"] = salt
        write_private(self.config_file, yaml.safe_dump(document, sort_keys=False))
        for key, value in secrets.items():
            self.set_secret(key, value)
