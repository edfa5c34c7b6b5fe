"""`mastodon-data switchover`'s pure parts: the host script's PgBouncer steps (with its admin
console recorded) and LSN order, the stack's new order, what the command refuses."""

from __future__ import annotations

import common
import pytest
import switchover

from mastodon_data.cli import host_ssh
from mastodon_data.cli import switchover as command
from mastodon_data.config import ConfigError, Host, parse_settings
from mastodon_data.stack_config import StackConfig
from tests.fixtures import hosts_stack

SECRETS = {"sshPrivateKey": "k", "replicationPassword": "r" * 20, "dbPassword": "d" * 20}
INI = """[databases]
mastodon_production = host=10.0.0.1 port=5432 dbname=mastodon_production
mastodon_production_replica = host=10.0.0.2 port=5432 dbname=mastodon_production

[pgbouncer]
listen_addr = 10.0.0.2
"""
PARAMS = {
    "postgres_version": 15, "port": 5432, "pgbouncer_port": 6432,
    "db_name": "mastodon_production", "databases": ["mastodon_production"], "pause_wait": 10,
    "new_primary_address": "10.0.0.3", "new_primary_cert": "NEW PRIMARY CERT\n",
}  # fmt: skip


class Console:
    """PgBouncer's admin console: records the commands, fails those in `failing`."""

    def __init__(self, monkeypatch, failing: dict[str, str] | None = None):
        self.commands: list[str] = []
        self.failing = failing or {}
        monkeypatch.setattr(switchover, "admin", self)

    def __call__(self, params, command, wait=switchover.ADMIN_WAIT):
        self.commands.append(command)
        if command in self.failing:
            raise common.HostError(self.failing[command])
        return ""


@pytest.fixture
def pool_files(monkeypatch, tmp_path):
    ini, trusted = tmp_path / "pgbouncer.ini", tmp_path / "server-ca.crt"
    ini.write_text(INI)
    trusted.write_text("OWN CERT\nPRIMARY CA\n")
    monkeypatch.setattr(switchover, "INI", ini)
    monkeypatch.setattr(switchover, "SERVER_CA", trusted)
    return ini, trusted


def test_repoint_sends_db_name_to_the_new_primary_then_resumes(monkeypatch, pool_files):
    ini, trusted = pool_files
    console = Console(monkeypatch)
    assert switchover.repoint(PARAMS) == "repointed"
    assert ini.read_text() == INI.replace("host=10.0.0.1", "host=10.0.0.3")
    assert trusted.read_text() == "OWN CERT\nPRIMARY CA\nNEW PRIMARY CERT\n"
    # The console's RELOAD is done when it answers: the RESUME comes after it, not before.
    assert console.commands == ["RELOAD", "RESUME mastodon_production"]
    console.commands.clear()
    assert switchover.repoint(PARAMS) == "unchanged"  # a re-run only resumes
    assert console.commands == ["RESUME mastodon_production"]
    assert trusted.read_text().count("NEW PRIMARY CERT") == 1


def test_a_pause_that_does_not_finish_resumes_and_fails(monkeypatch):
    console = Console(monkeypatch, {"PAUSE mastodon_production": "timed out"})
    with pytest.raises(common.HostError, match="the pools were resumed"):
        switchover.pause(PARAMS)
    assert console.commands == ["PAUSE mastodon_production", "RESUME mastodon_production"]


def test_pause_and_resume_again_change_nothing(monkeypatch):
    Console(monkeypatch, {"PAUSE mastodon_production": "ERROR: already suspended/paused"})
    assert switchover.pause(PARAMS) == ["mastodon_production"]
    Console(monkeypatch, {"RESUME mastodon_production": "ERROR: database is not paused"})
    assert switchover.resume(PARAMS) == ["mastodon_production"]


def test_lsns_compare_as_numbers():
    assert switchover.lsn_value("0/3000060") == 0x3000060
    assert switchover.lsn_value("1/0") > switchover.lsn_value("0/FFFFFFFF")


def loaded(config: dict) -> StackConfig:
    return StackConfig(parse_settings(config, set(SECRETS)), config, SECRETS, frozenset())


def test_the_target_leads_and_the_old_primary_follows_as_a_replica(tmp_path):
    stack = loaded(hosts_stack(count=4, replicas=2))
    servers = [h for h in stack.settings.hosts if h.role != "spare"]
    switch = command.Switch(stack, servers, "db3", tmp_path / "key", None)
    order = command.new_order(stack, switch)
    assert [h["name"] for h in order["hosts"]] == ["db3", "db2", "db1", "db4"]
    assert order["replicaCount"] == 2


def test_only_a_replica_can_take_over(tmp_path):
    stack = loaded(hosts_stack(count=4, replicas=2))
    servers = [h for h in stack.settings.hosts if h.role != "spare"]
    for name in ("db1", "db4", "nohost"):  # the primary, a spare, no host
        with pytest.raises(ConfigError, match="is not a replica of this stack"):
            command.Switch(stack, servers, name, tmp_path / "key", None)


def test_without_pools_there_is_nothing_to_pause():
    stack = loaded({**hosts_stack(count=2, replicas=1), "pgbouncer": False})
    with pytest.raises(ConfigError, match="pauses PgBouncer's pools"):
        command.switchover(None, stack, "db2", None, 30)


def test_a_serving_script_answers_step_after_step_through_the_launcher(monkeypatch, tmp_path):
    """host_ssh.Serving with `sh -c` in place of ssh: the launcher hands the rest of stdin to
    the script, which answers each step by a line until its stdin closes."""
    monkeypatch.setattr(host_ssh, "ssh_argv", lambda *args, **kwargs: ["sh", "-c", "ssh"])
    host = Host("db1", "primary", "10.0.0.1", "10.1.0.1")
    serving = host_ssh.Serving(host, "switchover", tmp_path / "key", None)
    try:
        with pytest.raises(host_ssh.StepFailed, match="unknown switchover action 'nap'"):
            serving.ask({**PARAMS, "action": "nap"}, timeout=30)
        assert serving.ask({**PARAMS, "action": "pause", "databases": []}) == {"paused": []}
    finally:
        serving.close()
    assert serving.process.returncode == 0


def checking_of(argv: list[str]) -> list[str]:
    return [o for o in argv if o.startswith(("UserKnownHostsFile", "StrictHostKeyChecking"))]


def test_ssh_checks_the_pinned_key_else_the_file_given_else_first_use(tmp_path):
    key = tmp_path / "key"
    pinned = Host("p", "primary", "192.0.2.1", "10.0.0.1", host_key="ssh-ed25519 AAAA")
    unpinned = Host("u", "replica", "192.0.2.2", "10.0.0.2")
    assert checking_of(host_ssh.ssh_argv(pinned, key, host_ssh.FIRST_USE)) == [
        f"UserKnownHostsFile={tmp_path}/known_hosts.p",
        "StrictHostKeyChecking=yes",
    ]
    # A run of `pulumi up`: trusted on first use in a throw-away file beside the key, as the
    # steps' own connections without a hostKey (never the operator's ~/.ssh/known_hosts).
    assert checking_of(host_ssh.ssh_argv(unpinned, key, host_ssh.FIRST_USE)) == [
        f"UserKnownHostsFile={tmp_path}/known_hosts",
        "StrictHostKeyChecking=accept-new",
    ]
    given = tmp_path / "given"
    assert checking_of(host_ssh.ssh_argv(unpinned, key, given)) == [
        f"UserKnownHostsFile={given}",
        "StrictHostKeyChecking=yes",
    ]
    assert checking_of(host_ssh.ssh_argv(unpinned, key, None)) == [
        "StrictHostKeyChecking=accept-new"
    ]
