"""Helpers of the lab tests: a test lab of its own (prefix, subnet and directory differ from
`make lab`'s), with four hosts: a primary, two replicas and a spare that joins later."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from lab import namespaces as lab_hosts
from lab.stack import LabStack
from lab.system import REQUIRED_TOOLS
from mastodon_data import plan
from mastodon_data.cli import host_ssh
from mastodon_data.config import parse_settings

ROOT_DIR = Path(__file__).resolve().parents[2]

TEST_LAB = lab_hosts.Lab(
    prefix="mlabt", subnet="10.252.0.0/24", state_dir=Path("/var/lib/mastodon-lab-test")
)


def process_marks(pids: list[int]) -> set[tuple[int, str]]:
    """(pid, start time) of each live process: a pid the kernel hands out again later is another
    process (this machine cycles its 32768 pids within a minute under the tests)."""
    marks = set()
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":  # a zombie is dead, only not yet reaped
            marks.add((pid, fields[19]))
    return marks


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (network and mount namespaces)"
    for tool, package in REQUIRED_TOOLS.items():
        if not shutil.which(tool):
            return f"{tool} is missing (apt install {package})"
    return None


@contextmanager
def own_lab(lab: lab_hosts.Lab, hosts: int) -> Iterator[lab_hosts.Lab]:
    """A lab of the test's own, made fresh and removed afterwards, also after a failure."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    lab_hosts.down(lab)
    try:
        lab_hosts.up(lab, hosts)
        yield lab
    finally:
        lab_hosts.down(lab)


class PgbenchLoad:
    """A write load on a lab host's primary: pgbench running `script` (one row per transaction),
    bounded by -T; `committed()` waits for it and returns the transactions it committed."""

    def __init__(self, lab: lab_hosts.Lab, script: str, seconds: int, options: str = "-c 2"):
        self.seconds = seconds
        argv = lab.ssh_command(
            lab.host(1).address,
            f"cd /tmp && runuser -u postgres -- /usr/lib/postgresql/15/bin/pgbench -n {options} "
            f"-T {seconds} -f {script} mastodon_production",
        )
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def committed(self) -> int:
        out, err = self.process.communicate(timeout=self.seconds + 60)
        for line in out.splitlines():
            if "number of transactions actually processed" in line:
                return int(line.split(":")[1].split("/")[0])
        raise AssertionError(f"pgbench printed no count: {out} {err}")


def run_one_step(
    config: dict, secrets: dict, name: str, workdir: Path, ca_cert: str = "", host_change=None
) -> str:
    """Step `name` of the plan for `config`, run alone over ssh (a test of one host script).
    `host_change` may alter the step's host (address, host key) first."""
    settings = parse_settings(config, set(secrets))
    step = next(s for s in plan.steps(settings.replication, settings.hosts) if s.name == name)
    if host_change:
        step = replace(step, host=replace(step.host, **host_change))
    key = workdir / "key"
    key.touch(mode=0o600)
    key.write_text(secrets["sshPrivateKey"])
    extra = {"primary_ca_cert": ca_cert} if step.script == "replica" and ca_cert else {}
    return host_ssh.run_step(step, secrets, key, None, extra)  # host keys are pinned


def applied(stack: LabStack, config: dict, secrets: dict[str, str]) -> dict:
    """`pulumi up` of `stack` with `config`; the stack outputs, plus each replication step's
    last report under "steps"."""
    stack.configure(config, secrets)
    stack.up()
    return {**stack.outputs(), "steps": stack.step_reports()}


@contextmanager
def primary_and_two_replicas(lab: lab_hosts.Lab, name: str, workdir: Path, figures: dict):
    """A stack `name` up on three fresh hosts of `lab` (hosts mode, pools on); its figures
    written at the end, also on failure."""
    with own_lab(lab, 3):
        stack = LabStack(name, workdir / "stack")
        stack.prepare()
        applied(stack, lab_hosts.stack_config(lab, 2, 3), new_secrets(lab))
        try:
            yield stack
        finally:
            write_figures(name, figures)


def new_secrets(lab: lab_hosts.Lab) -> dict[str, str]:
    """The stack secrets of a test lab: its operator key and two fresh passwords."""
    return {
        "sshPrivateKey": lab.private_key.read_text(),
        "replicationPassword": secrets.token_urlsafe(24),
        "dbPassword": secrets.token_urlsafe(24),
    }


def wait_until(condition, limit: float, what: str) -> float:
    """Polls `condition` (an AssertionError counts as not yet) for at most `limit` seconds;
    returns how long it took."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            if condition():
                return time.monotonic() - start
        except AssertionError:
            pass  # a host still restarting
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {limit} s")


def write_figures(name: str, figures: dict) -> None:
    """Measured figures of a lab test run (recorded, never asserted), in results/ (ignored)."""
    out = ROOT_DIR / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


class LabSession:
    def __init__(self, lab: lab_hosts.Lab, workdir: Path):
        self.lab, self.workdir = lab, workdir
        self.secrets = new_secrets(lab)
        self.stack = LabStack("labtest", workdir / "stack")
        self.stack.prepare()

    def apply(
        self, replica_count: int, reseed: tuple[str, ...] = (), sources_for: int | None = None
    ) -> dict:
        """`pulumi up` of the test lab's stack with `replica_count` replicas of four hosts (the
        first `sources_for` in postgresAllowedSources, default those in use)."""
        config = lab_hosts.stack_config(self.lab, replica_count, 4, sources_for)
        if reseed:
            config["reseedReplicas"] = list(reseed)
        return applied(self.stack, config, self.secrets)

    def ssh(
        self, index: int, command: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess:
        argv = self.lab.ssh_command(self.lab.host(index).address, command)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{command!r} on h{index}: {result.stderr}")
        return result

    def psql(
        self, index: int, sql: str, db: str = "mastodon_production", check: bool = True
    ) -> subprocess.CompletedProcess:
        return self.ssh(
            index, f"runuser -u postgres -- psql -X -A -t -d {db} -c {json.dumps(sql)}", check=check
        )
