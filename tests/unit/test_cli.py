"""The operator's command as installed into the venv: one `mastodon-data` with a subcommand per
tool, each with its own options and exit codes."""

from __future__ import annotations

import subprocess

import pytest

from mastodon_data.cli import COMMANDS
from tests.fixtures import COMMAND


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([COMMAND, *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    names = (
        "render-env", "check-replication", "failover", "switchover", "grant", "backups", "restore",
        "upgrade",
    )  # fmt: skip
    for name in names:
        assert f"  {name} " in result.stdout
    assert set(COMMANDS) == set(names)


@pytest.mark.parametrize("args", [(), ("render_env",), ("deploy",)])
def test_no_or_unknown_command_exits_2_with_the_list(args):
    result = run(*args)
    assert result.returncode == 2
    assert "usage: mastodon-data <command>" in result.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_has_its_own_help(name):
    result = run(name, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: mastodon-data {name}")


@pytest.mark.parametrize(
    ("name", "code"), [("render-env", 2), ("check-replication", 2), ("grant", 2)]
)
def test_bad_stdin_is_refused_with_the_commands_exit_code(name, code, tmp_path):
    result = (
        run(name, stdin="not json")
        if name != "render-env"
        else run(name, "--output", str(tmp_path / ".env"), stdin="not json")
    )
    assert result.returncode == code
    assert "error" in result.stderr
