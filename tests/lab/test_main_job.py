"""The main job as the README shows it (`make lab`: lab/main.py), run twice on a lab of its own
(the same code on other names and addresses): the first run makes the stack, writes the env,
checks replication and every host's exporters, and takes the first full backup into the lab's
S3 store; the second changes
nothing and takes no backup; `lab.namespaces down` leaves nothing; no tracked file changes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab import namespaces as lab_hosts
from lab.system import netns_list, wait_for_port

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
MAIN_JOB_LAB = lab_hosts.Lab(
    prefix="mlmj", subnet="10.228.0.0/24", state_dir=Path("/var/lib/mastodon-lab-mainjob")
)
S3_PORTS = (19052, 19053)  # not make lab's own (19050-19051): both may run at once
RESOURCES = 32  # 3 hosts, 2 replicas, the pools, the backups and the exporters
ENV = {
    **os.environ,
    "LAB_PREFIX": MAIN_JOB_LAB.prefix,
    "LAB_SUBNET": MAIN_JOB_LAB.subnet,
    "LAB_DIR": str(MAIN_JOB_LAB.state_dir),
    "LAB_S3_PORTS": ",".join(map(str, S3_PORTS)),
}
BACKUP_LINE = re.compile(r"^check ok; last backup (\d{8}-\d{6}F) \(full\);", re.M)


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, env=ENV, capture_output=True, text=True,
        timeout=1200,
    )  # fmt: skip


def tracked_changes() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    env_file = tmp_path_factory.mktemp("main-job") / ".env.production"
    before = tracked_changes()
    main = ("lab.main", "--hosts", "3", "--env-file", str(env_file))
    try:
        first = run(*main)
        second = run(*main) if first.returncode == 0 else None
        yield {"first": first, "second": second, "env_file": env_file, "before": before}
    finally:
        run("lab.namespaces", "down")


def check_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(f"{MAIN_JOB_LAB.prefix}-h")]


def test_the_first_run_makes_the_stack_checks_it_and_takes_the_first_backup(runs):
    first = runs["first"]
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"{RESOURCES} created" in first.stdout
    primary, archive, *replicas, e1, e2, e3 = check_lines(first.stdout)
    assert re.fullmatch(r"mlmj-h1: primary, \d+ other connections", primary)
    assert re.fullmatch(
        r"mlmj-h1: WAL archive, [1-9]\d* archived, 0 failed, last [0-9A-F]{24} [\d.]+ s ago, "
        r"\d+ B not yet archived",
        archive,
    )
    assert [re.sub(r"lag \d+ B / [\d.]+ s, \d+", "lag", r) for r in replicas] == [
        "mlmj-h2: replica, streaming, lag active connections",
        "mlmj-h3: replica, streaming, lag active connections",
    ]
    assert [e1, e2, e3] == [
        f"mlmj-h{i}: exporters postgres, node, pgbouncer, ssl answering" for i in (1, 2, 3)
    ]
    assert "taking the first full backup" in first.stderr
    assert BACKUP_LINE.search(first.stderr), first.stderr[-2000:]


def test_a_second_run_changes_nothing_and_takes_no_backup(runs):
    first, second = runs["first"], runs["second"]
    assert second is not None and second.returncode == 0, second and second.stderr[-3000:]
    assert f"{RESOURCES} unchanged" in second.stdout
    assert "taking the first" not in second.stderr
    label = BACKUP_LINE.search(first.stderr)[1]
    assert BACKUP_LINE.search(second.stderr)[1] == label


def test_the_env_is_private_and_no_secret_is_printed(runs):
    env_file = runs["env_file"]
    assert env_file.stat().st_mode & 0o777 == 0o600
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert values["DB_HOST"] == MAIN_JOB_LAB.host(1).address
    secrets = json.loads((MAIN_JOB_LAB.state_dir / "secrets.json").read_text())
    printed = "".join(r.stdout + r.stderr for r in (runs["first"], runs["second"]) if r)
    for key in ("dbPassword", "replicationPassword", "backupCipherPassphrase"):
        assert secrets[key] not in printed, key


def test_down_leaves_no_host_no_store_and_no_tracked_change(runs):
    assert run("lab.namespaces", "down").returncode == 0
    assert not [ns for ns in netns_list() if ns.startswith(f"{MAIN_JOB_LAB.prefix}-")]
    assert not wait_for_port("127.0.0.1", S3_PORTS[0], 1)  # moto
    assert not MAIN_JOB_LAB.state_dir.exists()
    assert tracked_changes() == runs["before"]
