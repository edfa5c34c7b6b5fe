"""The real Pulumi engine for tests: stacks of this project run by the CLI (through the Python
language host and the real providers) in private working directories (lab/stack.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lab.stack import ROOT, LabStack
from tests.fixtures import stack_file

POLICY = ROOT / "policy"
SECRETS = {
    "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAengine-test-key\n"
    "-----END OPENSSH PRIVATE KEY-----\n",
    "replicationPassword": "engine-test-replication-pw",
    "dbPassword": "engine-test-database-pw-01",
}
DROPLETS = {"sshKeyIds": ["12345"], "adminCidrs": ["198.51.100.7/32"]}
# The real DigitalOcean provider with a dummy token; its API URL is a closed loopback port, so
# nothing it might send leaves this machine (a plain preview sends nothing).
OFFLINE_DIGITALOCEAN = {
    "DIGITALOCEAN_TOKEN": "dop_v1_dummy-token-for-offline-previews",
    "DIGITALOCEAN_API_URL": "http://127.0.0.1:9",
    "DIGITALOCEAN_HTTP_RETRY_MAX": "0",
    "SPACES_ACCESS_KEY_ID": "DUMMYSPACESKEY",
    "SPACES_SECRET_ACCESS_KEY": "dummy-spaces-secret",
}


def engine_stack(tmp: Path, name: str, config: dict, secrets: dict[str, str]) -> LabStack:
    """Stack `name` in `tmp`, configured (plain values as a stack file holds them)."""
    stack = LabStack(name, tmp / name)
    stack.extra_env.update(OFFLINE_DIGITALOCEAN)
    stack.prepare()
    stack.configure(config, secrets)
    return stack


def example_config(stack: str) -> dict:
    """A committed example stack's plain settings (keys without the project prefix)."""
    return stack_file(stack)[0]


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
