"""The deploy pipeline's hand-off (.github/scripts/handoff_env.sh) with stand-ins for `pulumi`,
`ssh` and `scp` on PATH: the "app server" is a directory here, reached by running the remote
command locally. Proves what GitHub cannot be asked to show: the app's own keys are kept, the
stack's keys land with mode 0600, no secret reaches the job log, nothing is left behind."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".github" / "scripts" / "handoff_env.sh"
DB_PASS = "handoff-db-secret-0123456789"
APP_SECRET = "app-secret-key-base-abcdef"
OUTPUTS = {
    "mastodon_env": {
        "DB_HOST": "10.118.0.2",
        "DB_PORT": "5432",
        "DB_NAME": "mastodon_production",
        "DB_USER": "mastodon",
        "DB_PASS": DB_PASS,
        "DB_SSLMODE": "require",
    },
    "migration_env": {"DB_HOST": "10.118.0.2"},
}

FAKE_PULUMI = """#!/usr/bin/env bash
echo "$*" >>"$FAKE_LOG"
[[ "$1 $2" == "stack output" ]] && cat "$FAKE_OUTPUTS"
"""
# ssh [-o X]... [-i X] host command: runs the command here (the "server" is a local directory).
FAKE_SSH = """#!/usr/bin/env bash
echo "ssh $*" >>"$FAKE_LOG"
while [[ $1 == -o || $1 == -i ]]; do shift 2; done
shift
exec bash -c "$*"
"""
# scp [-q] [-o X]... [-i X] src dst, with host:path meaning the local path.
FAKE_SCP = """#!/usr/bin/env bash
echo "scp $*" >>"$FAKE_LOG"
args=()
while (($#)); do
  case $1 in -q) shift ;; -o|-i) shift 2 ;; *) args+=("${1#*:}"); shift ;; esac
done
cp "${args[0]}" "${args[1]}"
"""


@pytest.fixture
def pipeline(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("pulumi", FAKE_PULUMI), ("ssh", FAKE_SSH), ("scp", FAKE_SCP)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "outputs.json").write_text(json.dumps(OUTPUTS))
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    server = tmp_path / "server" / "live"
    server.mkdir(parents=True)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_OUTPUTS": str(tmp_path / "outputs.json"),
        "RUNNER_TEMP": str(runner_temp),
        "STACK": "prod",
        "APP_SERVERS": "mastodon@app1",
        "APP_ENV_PATH": str(server / ".env.production"),
        "APP_SSH_KEY_FILE": str(tmp_path / "id"),
        "APP_KNOWN_HOSTS_FILE": str(tmp_path / "known_hosts"),
    }

    def run(**extra):
        return subprocess.run(
            ["bash", str(SCRIPT)],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run, server / ".env.production", runner_temp, tmp_path / "calls.log"


def test_handoff_merges_into_the_servers_file_privately(pipeline):
    run, target, runner_temp, log = pipeline
    target.write_text(f"LOCAL_DOMAIN=example.social\nSECRET_KEY_BASE={APP_SECRET}\n")
    target.chmod(0o640)
    result = run()
    assert result.returncode == 0, result.stderr
    text = target.read_text()
    assert "LOCAL_DOMAIN=example.social" in text and f"SECRET_KEY_BASE={APP_SECRET}" in text
    assert f"DB_PASS={DB_PASS}" in text and "DB_HOST=10.118.0.2" in text
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    for secret in (DB_PASS, APP_SECRET):
        assert secret not in result.stdout + result.stderr
    assert "updated (mode 0600)" in result.stdout
    assert list(runner_temp.iterdir()) == []  # the work directory is gone
    calls = log.read_text()
    assert "stack output --json --show-secrets --stack prod" in calls
    assert "StrictHostKeyChecking=yes" in calls and "BatchMode=yes" in calls


def test_handoff_to_a_server_without_the_file_writes_the_stacks_keys(pipeline):
    run, target, _, _ = pipeline
    result = run(APP_RESTART_COMMAND="echo restarted >" + str(target.parent / "restart.log"))
    assert result.returncode == 0, result.stderr
    assert f"DB_PASS={DB_PASS}" in target.read_text()
    assert (target.parent / "restart.log").read_text() == "restarted\n"


def test_no_app_servers_means_nothing_to_do(pipeline):
    run, target, _, log = pipeline
    result = run(APP_SERVERS="")
    assert result.returncode == 0 and "nothing handed over" in result.stdout
    assert not target.exists() and not log.exists()


def test_masked_outputs_are_refused_and_nothing_is_written(pipeline, tmp_path):
    run, target, _, _ = pipeline
    (tmp_path / "outputs.json").write_text(json.dumps({"mastodon_env": "[secret]"}))
    result = run()
    assert result.returncode != 0
    assert not target.exists()
