"""Helpers of the droplets-mode tests on the DigitalOcean stand-in: a stand-in lab of their own,
flows (a stack's sequence of operations) run in parallel threads that record what they saw, and
probes of the lab's networks."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from labkit import lab_unavailable

from lab.stack import ROOT, engine_gap, write_private
from lab.standin._lab import OPERATOR_COMMAND, LabStack
from lab.standin.client import Client
from lab.standin.service import StandInLab
from lab.standin.stack import droplets_config, provider_env, stack_secrets, standin_stack

LAB = StandInLab(
    prefix="mlabdt",
    public_network="10.241.1.0/24",
    vpc_pool=("10.240.1.0/24", "10.240.2.0/24", "10.240.3.0/24"),
    state_dir=Path("/var/lib/mastodon-lab-do-test"),
)
STEP_WAIT = 1200  # seconds a test waits for the step of a flow it checks
COMMAND_TIMEOUT = 600  # seconds any one pulumi command may take
DB = "mastodon_production"

# A listener on the given ports (run in a probe namespace), to see whether a droplet reaches it.
LISTENER = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        s.accept()[0].close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
threading.Event().wait(600)
"""
PROBE = """
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("open")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("blocked" if e.errno == 1 else f"error {e.errno}")
"""


@contextmanager
def standin_account(lab: StandInLab) -> Iterator[tuple[Client, int]]:
    """`lab` started afresh (the test skipped where it cannot run), the operator's key in its
    account: (its client, the key's id); at the end nothing of it is left."""
    reason = lab_unavailable() or engine_gap()
    if reason:
        pytest.skip(reason)
    lab.down()
    try:
        client = lab.start()
        key = client.register_key(f"{lab.prefix}-operator", lab.hosts.ensure_operator_key())
        yield client, key["id"]
    finally:
        rest = lab.down()
        assert rest == [], f"the stand-in lab left: {rest}"


def program_stack(
    lab: StandInLab,
    client: Client,
    name: str,
    workdir: Path,
    program: Path,
    config: dict,
    timeout: float = 240,
) -> LabStack:
    """Stack `name` of a test's own program (`program`, its __main__.py) in `workdir`,
    configured, its provider on the stand-in."""
    stack = LabStack(name, workdir, timeout=timeout)
    stack.extra_env.update(provider_env(lab, client))
    workdir.mkdir(mode=0o700, parents=True)
    (workdir / "backend").mkdir()
    (workdir / "Pulumi.yaml").write_text(
        "name: mastodon-data\nruntime:\n  name: python\n  options:\n"
        f"    toolchain: pip\n    virtualenv: {ROOT / 'venv'}\n"
    )
    (workdir / "__main__.py").symlink_to(program)
    write_private(workdir / "passphrase", "test-passphrase-of-a-throwaway-stack")
    stack.pulumi("stack", "init", name, "--secrets-provider", "passphrase", stack=False)
    stack.configure(config, {})
    return stack


class Flow:
    """A sequence of operations on one stack, in a thread; each step records what it saw."""

    def __init__(self, name: str, body: Callable[[Flow], None]):
        self.name, self.body = name, body
        self.facts: dict[str, dict] = {}
        self.error: str | None = None
        self.lock = threading.Condition()
        self.done = False
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=f"flow-{name}", daemon=True)

    def _run(self) -> None:
        try:
            self.body(self)
        except BaseException:  # noqa: BLE001 - shown by every test waiting on a later step
            self.error = traceback.format_exc()
        finally:
            with self.lock:
                self.done = True
                self.lock.notify_all()

    def record(self, step: str, **facts) -> None:
        facts["at_seconds"] = round(time.monotonic() - self.started, 1)
        with self.lock:
            self.facts[step] = facts
            self.lock.notify_all()

    def wait(self, step: str, limit: float = STEP_WAIT) -> dict:
        with self.lock:
            self.lock.wait_for(lambda: step in self.facts or self.done, limit)
            if step in self.facts:
                return self.facts[step]
        raise AssertionError(f"flow {self.name} did not reach {step!r}:\n{self.error or 'timeout'}")


class Droplets:
    """One stack of a flow: its stand-in client (token = stack name), stack and helpers."""

    def __init__(self, lab: StandInLab, url: str, key_id: int, workdir: Path, name: str,
                 vpc: str, replicas: int, **changes):  # fmt: skip
        self.lab, self.name = lab, name
        self.client = Client(url, token=f"dop_v1_standin-{name}")
        self.config = droplets_config(lab, key_id, vpc, replicas, **changes)
        self.secrets = stack_secrets(lab, workdir / f"{name}-secrets.json")
        self.stack: LabStack = standin_stack(
            lab, self.client, name, workdir / name, self.config, self.secrets
        )
        self.stack.timeout = COMMAND_TIMEOUT

    def apply(self, **changes) -> dict:
        """`pulumi up` with `changes` to the configuration; the outputs and how long it took."""
        self.config.update(changes)
        self.stack.configure(self.config, self.secrets)
        started = time.monotonic()
        self.stack.up()
        return {
            "seconds": round(time.monotonic() - started, 1),
            "changes": self.stack.last_changes(),
            "outputs": self.stack.outputs(),
        }

    def droplet(self, position: int | str) -> dict:
        """The database droplet db-<position> as the account lists it."""
        return self.client.droplet_named(f"mastodon-db-{self.name}-{position}")

    def ssh(self, address: str, command: str, timeout: float = 60, check=True) -> str:
        argv = self.lab.hosts.ssh_command(address, command)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{command!r} on {address}: {result.stderr}")
        return result.stdout.strip()

    def psql(self, address: str, sql: str, check=True) -> str:
        return self.ssh(
            address,
            f"runuser -u postgres -- psql -X -A -t -d {DB} -c {json.dumps(sql)}",
            check=check,
        )


def public(outputs: dict, role: str) -> str:
    hosts = [outputs["primary"], *outputs.get("replicas", [])]
    return next(h["public_address"] for h in hosts if h["name"] == role)


def check_replication(outputs: dict) -> tuple[int, str]:
    """`mastodon-data check-replication` on the stack outputs (from here: the operator is in the
    VPC)."""
    result = subprocess.run(
        [str(OPERATOR_COMMAND), "check-replication"],
        input=json.dumps(outputs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stdout + result.stderr


def tcp(host: str, port: int, netns: str | None = None, seconds: float = 2.0) -> str:
    """open / refused / timeout / blocked (dropped by this side's own filter), from this
    machine or from inside a namespace."""
    argv = [sys.executable, "-c", PROBE, host, str(port), str(seconds)]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()


def wait_until(condition: Callable[[], bool], limit: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            if condition():
                return round(time.monotonic() - started, 1)
        except AssertionError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {limit} s")
