"""Protection and lifecycle options on Pulumi's mocks (the options as the program passes them),
roles by position (primaryNode), the admins' keys step, the settings' checks, the managed
version guard, and the authorized_keys host script on a directory of its own."""

from __future__ import annotations

import io
import json
import os
import pwd
import shlex
import sys

import authorized_keys
import pulumi
import pytest
from program_harness import run_program

from mastodon_data.components.droplets import create_only_warnings
from mastodon_data.components.managed_postgres import version_check
from mastodon_data.config import SECRET_KEYS, ConfigError, parse_settings
from tests.fixtures import DROPLETS, HOST_KEY, MANAGED, SPACES

ADMIN_KEY = HOST_KEY  # any OpenSSH public key line
STATEFUL = ("/droplet:Droplet", "/volume:Volume", "/databaseCluster:DatabaseCluster",
            "/databaseReplica:DatabaseReplica", "/spacesBucket:SpacesBucket")  # fmt: skip
MANAGED_ALL = {**MANAGED, **SPACES, "managedReplica": True, "redisMode": "managed"}


def stateful(run) -> list[str]:
    return sorted(r.name for suffix in STATEFUL for r in run.of_type(suffix))


def protected(run) -> list[str]:
    return sorted(name for name in stateful(run) if run.options[name].protect is True)


def test_every_resource_holding_data_is_protected_by_default():
    droplets = run_program({**DROPLETS, **SPACES, "replicaCount": 2})
    assert stateful(droplets) == [
        "db-pg18-0", "db-pg18-0-data", "db-pg18-1", "db-pg18-1-data", "db-pg18-2",
        "db-pg18-2-data", "media-bucket",
    ]  # fmt: skip
    assert protected(droplets) == stateful(droplets)
    managed = run_program(MANAGED_ALL, secrets={})
    assert stateful(managed) == [
        "media-bucket", "postgres-cluster", "postgres-replica", "redis-cluster"
    ]  # fmt: skip
    assert protected(managed) == stateful(managed)
    # and nothing else (protect is inherited from a parent): a firewall, a pool, a command may go
    for run in (droplets, managed):
        assert sorted(n for n, on in run.protected.items() if on) == stateful(run)


def test_protect_data_false_unprotects_them_for_the_run():
    droplets = run_program({**DROPLETS, **SPACES, "protectData": False})
    assert stateful(droplets) == [
        "db-pg18-0", "db-pg18-0-data", "db-pg18-1", "db-pg18-1-data", "media-bucket"
    ]  # fmt: skip
    assert protected(droplets) == []
    assert protected(run_program({**MANAGED_ALL, "protectData": "false"}, secrets={})) == []


def test_droplets_ignore_the_inputs_that_would_replace_them_and_keep_their_former_urns():
    run = run_program({**DROPLETS, "replicaCount": 2, "protectData": False})
    # The tier is named after its version and answers to its name before generations, "db";
    # the engine carries that alias to its children (db-pg18-0 was db-0).
    assert [a.name for a in run.options["db-pg18"].aliases] == ["db"]
    for index, former in enumerate(["primary", "replica-1", "replica-2"]):
        options = run.options[f"db-pg18-{index}"]
        assert sorted(options.ignore_changes) == ["image", "sshKeys", "userData"]
        (alias,) = options.aliases
        assert alias.name == f"db-pg18-{former}"  # same parent (the tier), same type


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_no_warning_when_the_droplets_were_made_as_configured(caplog):
    run_program({**DROPLETS, "replicaCount": 1})
    assert warnings_of(caplog) == []


def test_keys_and_image_the_droplets_were_not_made_with_are_named_with_what_applies(caplog):
    # The state's values of inputs the droplets ignore, as a preview sees them.
    made_with = {"sshKeys": ["12345", "11111"], "image": "ubuntu-22-04-x64"}
    run_program({**DROPLETS, "sshKeyIds": ["12345", "67890"]}, made_with=made_with)
    assert warnings_of(caplog) == [
        "sshKeyIds (added 67890; removed 11111) reach only droplets made later, as other keys "
        "would mean a new droplet without its data; these keep the keys they were made with: "
        "mastodon-db-unit-0, mastodon-db-unit-1. To let a key in on them, add its public key "
        "(the .pub line) to authorizedKeys.",
        "image ubuntu-24-04-x64 reaches only droplets made later, as another image would mean a "
        "new droplet without its data; these keep the system they were made from: "
        "mastodon-db-unit-0 (ubuntu-22-04-x64), mastodon-db-unit-1 (ubuntu-22-04-x64). Upgrade "
        "their system on the droplets themselves.",
    ]


def test_keys_in_another_order_are_the_same_keys():
    settings = parse_settings({**DROPLETS, "sshKeyIds": ["1", "2"]}, SECRET_KEYS).droplets
    made = [("db-0", ["2", "1"], settings.image), ("db-1", None, None)]  # db-1: not known
    assert create_only_warnings(settings, made) == []
    assert len(create_only_warnings(settings, [("db-0", ["1"], settings.image)])) == 1


def test_the_pool_is_deleted_before_its_replacement_is_made():
    run = run_program(MANAGED, secrets={})
    assert run.options["postgres-pool"].delete_before_replace is True
    assert not run.options["postgres-cluster"].delete_before_replace


def test_the_cluster_version_is_ignored_unless_the_run_asks_for_the_upgrade():
    run = run_program({**MANAGED, "postgresVersion": 17}, secrets={})
    assert run.options["postgres-cluster"].ignore_changes == ["version"]
    assert run.one("/databaseCluster:DatabaseCluster").inputs["version"] == "17"
    upgrade = run_program({**MANAGED, "postgresVersion": 17, "postgresUpgradeTo": 17}, secrets={})
    assert not upgrade.options["postgres-cluster"].ignore_changes
    assert upgrade.options["postgres-cluster"].protect is True


def test_the_upgrade_waits_for_its_rehearsal_which_runs_again_only_in_the_upgrading_run():
    run = run_program({**MANAGED, "postgresVersion": 17}, secrets={})
    rehearsal = run.one("command:local:Command", "postgres-upgrade-rehearsal")
    argv = shlex.split(rehearsal.inputs["create"])
    assert argv[1:] == ["-m", "mastodon_data.cli.rehearse_upgrade", "--cluster",
                        "mastodon-data-unit-pg", "--version", "17", "--database",
                        "mastodon_production", "--poll", "5"]  # fmt: skip
    assert run.options["postgres-upgrade-rehearsal"].ignore_changes == ["create"]
    (waits_for,) = run.options["postgres-cluster"].depends_on
    assert waits_for._name == "postgres-upgrade-rehearsal"
    upgrade = run_program({**MANAGED, "postgresVersion": 17, "postgresUpgradeTo": 17}, secrets={})
    assert not upgrade.options["postgres-upgrade-rehearsal"].ignore_changes
    assert "token" not in json.dumps(rehearsal.inputs).lower()  # the provider's environment


def test_a_changed_version_stops_the_run_naming_the_setting_and_both_fixes():
    version_check("17", "17")  # the same: nothing to say
    version_check(None, "17")  # not known yet (a new cluster in a preview)
    with pytest.raises(pulumi.RunError) as stopped:
        version_check("16", "17")
    message = str(stopped.value)
    assert message.startswith("mastodon-data:postgresVersion = 17: the managed cluster runs ")
    assert "pulumi config set mastodon-data:postgresUpgradeTo 17 for this run" in message
    assert "pulumi config set mastodon-data:postgresVersion 16" in message


def servers(run) -> tuple[str, list[str]]:
    return run.outputs["primary"]["name"], [r["name"] for r in run.outputs["replicas"]]


def test_primary_node_makes_another_droplet_the_primary_and_renames_nothing():
    before = run_program({**DROPLETS, "replicaCount": 2})
    after = run_program({**DROPLETS, "replicaCount": 2, "primaryNode": 1})
    assert servers(before) == ("db-0", ["db-1", "db-2"])
    assert servers(after) == ("db-1", ["db-0", "db-2"])
    for run in (before, after):
        droplets = {d.name: d.inputs["name"] for d in run.of_type("/droplet:Droplet")}
        assert droplets == {f"db-pg18-{i}": f"mastodon-db-unit-{i}" for i in range(3)}
    commands = {c.name: c for c in after.of_type("command:remote:Command")}
    primary = json.loads(commands["replication-pg18-primary"].inputs["stdin"])["params"]
    assert primary["private_address"] == "10.118.0.3"  # db-1's
    assert primary["replication_peers"] == ["10.118.0.2", "10.118.0.4"]  # db-0's and db-2's
    slots = json.loads(commands["replication-pg18-slots"].inputs["stdin"])["params"]
    assert slots["replicas"] == ["db-0", "db-2"]
    for name in ("db-0", "db-2"):
        params = json.loads(commands[f"replication-pg18-replica-{name}"].inputs["stdin"])["params"]
        assert params["primary_address"] == "10.118.0.3"
    env = after.outputs["mastodon_env"]
    # Reads go to the load balancer over the tag (replicaLoadBalancer auto, 2 replicas); the
    # first replica listed is db-0.
    assert env["DB_HOST"] == "10.118.0.3" and env["REPLICA_DB_HOST"] == "10.118.0.200"
    assert after.outputs["replicas"][0]["private_address"] == "10.118.0.2"


def test_sizes_follow_the_role():
    run = run_program({**DROPLETS, "primaryNode": 1, "primarySize": "s-4vcpu-8gb"})
    sizes = {d.name: d.inputs["size"] for d in run.of_type("/droplet:Droplet")}
    assert sizes == {"db-pg18-0": "s-2vcpu-4gb", "db-pg18-1": "s-4vcpu-8gb"}


def test_admin_keys_go_to_every_host_on_stdin_only_when_listed():
    none = run_program(DROPLETS)
    assert [c.name for c in none.of_type("command:remote:Command") if "keys" in c.name] == []
    run = run_program({**DROPLETS, "authorizedKeys": [ADMIN_KEY + " admin@example"]})
    commands = {c.name: c for c in run.of_type("command:remote:Command")}
    for host, address in (("db-0", "203.0.113.1"), ("db-1", "203.0.113.2")):
        command = commands[f"admin-keys-{host}"]
        stdin = json.loads(command.inputs["stdin"])
        assert stdin["run"] == "authorized_keys.py"
        # The key's comment dropped.
        assert stdin["params"] == {"ssh_user": "root", "authorized_keys": [ADMIN_KEY]}
        assert command.inputs["connection"]["host"] == address
        assert ADMIN_KEY not in command.inputs["create"]
        assert "stdin" in run.options[f"admin-keys-{host}"].additional_secret_outputs


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"primaryNode": 2}, "mastodon-data:primaryNode = 2: no droplet db-2: replicaCount 1 "
         "makes db-0 to db-1. Fix: pulumi config set mastodon-data:primaryNode 0"),
        ({"primaryNode": 11}, "mastodon-data:primaryNode = 11: not an integer from 0 to 10. "
         "Fix: pulumi config set mastodon-data:primaryNode 1"),
        ({"postgresUpgradeTo": 17}, "mastodon-data:postgresUpgradeTo = 17: only a managed "
         "cluster is upgraded in place; hosts mode moves to new servers (upgradeFrom, "
         "docs/operators/major-upgrade.md). Fix: pulumi config rm mastodon-data:postgresUpgradeTo"),
        ({"protectData": "yes"}, "mastodon-data:protectData = 'yes': not true or false. Fix: "
         "pulumi config set mastodon-data:protectData True"),
        ({"authorizedKeys": ["ssh-ed25519"]}, "mastodon-data:authorizedKeys[0] = "
         "'ssh-ed25519': not '<type> <base64>' with a type among"),
    ],
)  # fmt: skip
def test_bad_lifecycle_settings_name_the_setting_and_the_fix(changes, expected):
    with pytest.raises(ConfigError) as problems:
        parse_settings({**DROPLETS, **changes}, SECRET_KEYS)
    (line,) = str(problems.value).splitlines()
    assert line.startswith(expected)


def test_managed_upgrade_must_name_the_version_set():
    with pytest.raises(ConfigError) as problems:
        parse_settings({**MANAGED, "postgresVersion": 17, "postgresUpgradeTo": 18}, ())
    assert str(problems.value) == (
        "mastodon-data:postgresUpgradeTo = 18: not postgresVersion 17: the run may upgrade only "
        "to the version set. Fix: pulumi config set mastodon-data:postgresUpgradeTo 17, or "
        "pulumi config rm mastodon-data:postgresUpgradeTo"
    )
    with pytest.raises(ConfigError, match="primaryNode = 1: only droplets mode"):
        parse_settings({**MANAGED, "primaryNode": 1}, ())


def keys_for(user: str, *keys: str) -> dict:
    """The authorized_keys step's parameters."""
    return {"ssh_user": user, "authorized_keys": list(keys)}


def run_script(monkeypatch, home, params: dict) -> dict:
    me = pwd.getpwuid(os.getuid())
    fake = pwd.struct_passwd((*me[:5], str(home), me[6]))
    monkeypatch.setattr(authorized_keys.pwd, "getpwnam", lambda name: fake)
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(params)))
    return authorized_keys.main()


def test_the_script_keeps_the_keys_in_its_block_and_leaves_the_rest(monkeypatch, tmp_path):
    ssh = tmp_path / ".ssh"
    ssh.mkdir(mode=0o755)
    (ssh / "authorized_keys").write_text("ssh-ed25519 AAAAcreatedbydigitalocean do\n")
    first = run_script(monkeypatch, tmp_path, keys_for("deploy", ADMIN_KEY + " a@b"))
    text = (ssh / "authorized_keys").read_text()
    assert text == (
        "# BEGIN mastodon-data (managed: edits here are overwritten)\n"
        f"{ADMIN_KEY}\n# END mastodon-data\nssh-ed25519 AAAAcreatedbydigitalocean do\n"
    )
    assert first["changed"] == ["authorized_keys written"] and first["keys"] == 1
    assert (ssh.stat().st_mode & 0o777, (ssh / "authorized_keys").stat().st_mode & 0o777) == (
        0o700, 0o600,
    )  # fmt: skip
    again = run_script(monkeypatch, tmp_path, keys_for("deploy", ADMIN_KEY))
    assert again["changed"] == []  # a re-run changes nothing
    run_script(monkeypatch, tmp_path, keys_for("deploy"))  # the key retired
    assert (ssh / "authorized_keys").read_text().count("ssh-") == 1


def test_the_script_refuses_what_is_not_a_public_key(monkeypatch, tmp_path):
    with pytest.raises(authorized_keys.HostError, match="not OpenSSH public keys"):
        run_script(monkeypatch, tmp_path, keys_for("deploy", "rm -rf /"))


def test_failover_reads_the_droplets_from_the_outputs_by_position():
    from mastodon_data.cli.failover import droplet_hosts

    outputs = {
        "primary": {"name": "db-1", "public_address": "203.0.113.2", "private_address": "10.0.0.3"},
        "replicas": [
            {"name": "db-0", "public_address": "203.0.113.1", "private_address": "10.0.0.2"}
        ],
    }
    hosts = droplet_hosts(outputs, "deploy")
    assert [(h.name, h.role, h.public_address, h.private_address, h.ssh_user) for h in hosts] == [
        ("db-1", "primary", "203.0.113.2", "10.0.0.3", "deploy"),
        ("db-0", "replica", "203.0.113.1", "10.0.0.2", "deploy"),
    ]


def test_a_replica_ahead_of_the_new_primarys_timeline_is_told_apart(tmp_path):
    from types import SimpleNamespace

    import replica

    log = tmp_path / "postgresql-15-main.log"
    cluster = SimpleNamespace(log_file=log)
    log.write_text("LOG:  restarted WAL streaming at 0/4000000 on timeline 1\n")
    assert replica.log_says_reseed(cluster, 0) is None
    forked = (
        "LOG:  new timeline 2 forked off current database system timeline 1 before current "
        "recovery point 0/40326D8\n"
    )  # what a former primary said after a crash and a failover, on the stand-in
    with log.open("a") as handle:
        handle.write(forked)
    assert replica.log_says_reseed(cluster, 0) == "ahead of the primary's timeline"
    assert replica.log_says_reseed(cluster, log.stat().st_size) is None  # only what is new
    log.write_text(
        "FATAL:  requested WAL segment 000000010000000000000003 has already been removed\n"
    )
    assert replica.log_says_reseed(cluster, 0) == "slot invalidated"
    assert set(replica.RESEED_WHY) == {"slot invalidated", "ahead of the primary's timeline"}
