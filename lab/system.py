"""What the labs do on this machine: run a command, refuse clearly where they cannot run, and
look at or remove network namespaces, links and processes. Stdlib only (`python3 -m
lab.namespaces down` works without the venv)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

# Which Debian package provides each tool the lab needs (for the refusal message).
REQUIRED_TOOLS = {
    "ip": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "/usr/sbin/sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "pg_createcluster": "postgresql-common",
}

STEP_TIMEOUT = 30  # seconds for any single system command


class LabError(RuntimeError):
    """The lab cannot be built or removed; the message says why and what to do."""


def run(
    argv: list[str], check: bool = True, timeout: float = STEP_TIMEOUT, input: str | None = None
) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result


def preflight() -> None:
    """Refuse clearly where the lab cannot run."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network and mount namespaces): run it with sudo")
    missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if not shutil.which(tool)})
    if missing:
        raise LabError(
            "the lab needs tools that are not installed; install them with: "
            f"apt-get install -y {' '.join(missing)}"
        )


def netns_list() -> set[str]:
    out = run(["ip", "netns", "list"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def link_exists(name: str, netns: str | None = None) -> bool:
    argv = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", name]
    return run(argv, check=False).returncode == 0


def pid_alive(pid_file: Path) -> int | None:
    """The pid in the file when that process runs (a killed one not yet reaped is a zombie)."""
    try:
        pid = int(pid_file.read_text().strip())
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return None
    return None if "\nState:\tZ" in status else pid


def wait_for_port(address: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def remove_netns(ns: str, grace: float = 10.0) -> None:
    """Stop every process in the namespace (their mounts go with them), then delete it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in run(["ip", "netns", "pids", ns], check=False).stdout.split()]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            if not run(["ip", "netns", "pids", ns], check=False).stdout.split():
                pids = []
                break
            time.sleep(0.1)
        if not pids:
            break
    run(["ip", "netns", "del", ns], check=False)
