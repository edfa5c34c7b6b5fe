"""A blue/green major upgrade (hosts and droplets mode) as the program makes it (config/upgrade.py,
components/upgrade.py): `upgradeFrom`'s checks, both generations' steps under their versions'
names, the run that moves Mastodon's writes, and the env naming the side that serves. The run
against servers: tests/lab/test_upgrade_engine.py (hosts), tests/lab/test_upgrade_standin.py
(droplets)."""

from __future__ import annotations

import json

import pytest
from program_harness import run_program

from lab.example_stacks import DROPLETS, host_entries, hosts_stack
from mastodon_data.cli import host_ssh
from mastodon_data.cli.bluegreen import Upgrade
from mastodon_data.config import ConfigError, parse_settings
from tests.fixtures import SECRETS

OLD_HOSTS = host_entries(2, first_address=1)  # db1 (primary), db2: PostgreSQL 15
NEW_HOSTS = [  # PostgreSQL 17, on servers of their own
    {**entry, "name": f"new{n}"} for n, entry in enumerate(host_entries(2, first_address=21), 1)
]
UPGRADING = {
    **hosts_stack(replicas=1), "hosts": NEW_HOSTS, "postgresVersion": 17, "pgbouncer": True,
    "upgradeFrom": {"postgresVersion": 15, "hosts": OLD_HOSTS},
}  # fmt: skip


def problems(config: dict) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        parse_settings(config, set(SECRETS))
    return [line for line in str(refused.value).splitlines() if "upgradeFrom" in line]


def test_upgrade_from_names_the_old_servers_and_version():
    upgrade = parse_settings(UPGRADING, set(SECRETS)).upgrade
    assert (upgrade.postgres_version, upgrade.serve) == (15, "new")
    assert [(h.name, h.role, h.private_address) for h in upgrade.hosts] == [
        ("db1", "primary", "10.0.0.1"), ("db2", "replica", "10.0.0.2"),
    ]  # fmt: skip


def test_upgrade_from_refuses_a_version_not_older_a_shared_server_and_an_unknown_serve():
    bad = {"postgresVersion": 17, "hosts": [OLD_HOSTS[0], NEW_HOSTS[1]], "serve": "blue"}
    assert problems({**UPGRADING, "upgradeFrom": bad}) == [
        "mastodon-data:upgradeFrom.postgresVersion = 17: not older than postgresVersion 17: the "
        "upgrade goes to a newer major version. Fix: pulumi config set --path "
        "'mastodon-data:upgradeFrom.postgresVersion' <the old servers' version>, and pulumi "
        "config set mastodon-data:postgresVersion <the new version>",
        *[
            f"mastodon-data:upgradeFrom.hosts[1].{key} = {value!r}: also a server of hosts: the "
            "new version runs on servers of its own. Fix: list the new servers in hosts and the "
            "old ones in upgradeFrom.hosts"
            for key, value in (
                ("name", "new2"),
                ("publicAddress", "192.0.2.22:22"),
                ("privateAddress", "10.0.0.22"),
            )
        ],  # fmt: skip
        "mastodon-data:upgradeFrom.serve = 'blue': not new or old. Fix: pulumi config set "
        "--path 'mastodon-data:upgradeFrom.serve' new",
    ]


def test_upgrade_from_needs_the_pools():
    assert problems({**UPGRADING, "pgbouncer": False}) == [
        "mastodon-data:upgradeFrom = <object>: the cut-over pauses PgBouncer's pools, and "
        "pgbouncer is off. Fix: pulumi config set mastodon-data:pgbouncer true"
    ]


DROPLETS_UPGRADING = {
    **DROPLETS, "replicaCount": 1, "pgbouncer": True, "postgresVersion": 17,
    "image": "debian-13-x64", "upgradeFrom": {"postgresVersion": 15},
}  # fmt: skip


def test_droplets_mode_upgrades_the_stacks_droplets_and_refuses_old_hosts_and_early_retiring():
    upgrade = parse_settings(DROPLETS_UPGRADING, set(SECRETS)).upgrade
    assert (upgrade.postgres_version, upgrade.hosts, upgrade.serve, upgrade.retire) == (
        15, (), "new", False,
    )  # fmt: skip
    bad = {"postgresVersion": 15, "hosts": OLD_HOSTS, "serve": "old", "retire": True}
    assert problems({**DROPLETS_UPGRADING, "upgradeFrom": bad}) == [
        "mastodon-data:upgradeFrom.hosts = <list>: droplets mode made the old servers: they are "
        "the stack's droplets now. Fix: pulumi config rm --path 'mastodon-data:upgradeFrom.hosts'",
        "mastodon-data:upgradeFrom.retire = True: the old servers still take Mastodon's writes "
        "(serve old). Fix: pulumi config set --path 'mastodon-data:upgradeFrom.serve' new, "
        "pulumi up, then retire",
    ]
    assert problems({**UPGRADING, "upgradeFrom": {**UPGRADING["upgradeFrom"], "retire": 1}}) == [
        "mastodon-data:upgradeFrom.retire = 1: not true or false. Fix: pulumi config set --path "
        "'mastodon-data:upgradeFrom.retire' true"
    ]


def by_name(run, suffix: str) -> dict:
    return {r.name: r for r in run.of_type(suffix)}


def test_droplets_mode_makes_a_tier_per_version_the_new_ones_names_carrying_it():
    run = run_program(DROPLETS_UPGRADING)
    droplets = by_name(run, "/droplet:Droplet")
    assert {n: d.inputs["name"] for n, d in droplets.items()} == {
        "db-pg15-0": "mastodon-db-unit-0", "db-pg15-1": "mastodon-db-unit-1",
        "db-pg17-0": "mastodon-db-unit-pg17-0", "db-pg17-1": "mastodon-db-unit-pg17-1",
    }  # fmt: skip
    assert {d.inputs["tags"][0] for d in droplets.values()} == {
        "mastodon-data-unit-db", "mastodon-data-unit-db-pg17"
    }  # fmt: skip
    volumes = {v.inputs["name"] for v in run.of_type("/volume:Volume")}
    assert volumes == {"mastodon-db-unit-0-data", "mastodon-db-unit-1-data",
                       "mastodon-db-unit-pg17-0-data", "mastodon-db-unit-pg17-1-data"}  # fmt: skip
    # The old tier keeps the name tiers had before generations; both keep their data.
    assert [a.name for a in run.options["db-pg15"].aliases] == ["db"]
    assert run.options["db-pg17"].aliases is None
    assert all(run.options[n].protect is True for n in droplets)
    # A volume's and a tag's name are given at create only (a new name: a new volume), so the
    # new tier keeps them once the old one retires; a droplet is renamed in place.
    for name in ("db-pg17-0-data", "db-pg17-nodes", "db-pg17-firewall"):
        assert "name" in run.options[name].ignore_changes
    assert "name" not in run.options["db-pg17-0"].ignore_changes


def test_each_tiers_firewall_lets_the_other_tiers_nodes_in_to_postgres():
    run = run_program(DROPLETS_UPGRADING)
    firewalls = by_name(run, "/firewall:Firewall")
    for tier, peer in (("pg15", "mastodon-data-unit-db-pg17"), ("pg17", "mastodon-data-unit-db")):
        rules = firewalls[f"db-{tier}-firewall"].inputs["inboundRules"]
        (tagged,) = [r for r in rules if r.get("sourceTags")]
        assert tagged["portRange"] == "5432" and peer in tagged["sourceTags"]
    assert firewalls["db-pg17-firewall"].inputs["name"] == "mastodon-db-unit-pg17"
    assert sorted(firewalls["db-pg17-firewall"].inputs["dropletIds"]) == [1021, 1022]


@pytest.mark.parametrize(("serve", "host", "reads"), [
    ("new", "10.118.0.22", "10.118.0.220"), ("old", "10.118.0.2", "10.118.0.200"),
])  # fmt: skip
def test_droplets_env_and_read_endpoint_follow_the_side_that_serves(serve, host, reads):
    config = {**DROPLETS_UPGRADING, "replicaLoadBalancer": True,
              "upgradeFrom": {"postgresVersion": 15, "serve": serve}}  # fmt: skip
    run = run_program(config)
    env = run.outputs["mastodon_env"]
    assert (env["DB_HOST"], env["REPLICA_DB_HOST"]) == (host, reads)
    assert run.outputs["read_endpoint"]["private_host"] == reads
    given = json.loads(run.one("command:local:Command", "postgres-upgrade-run").inputs["stdin"])
    hosts = {side: [(h["name"], h["public_address"]) for h in g["hosts"]]
             for side, g in given["generations"].items()}  # fmt: skip
    # Both tiers name their droplets db-0, db-1: the run tells them apart by version.
    assert hosts == {
        "old": [("db-0-pg15", "203.0.113.1"), ("db-1-pg15", "203.0.113.2")],
        "new": [("db-0-pg17", "203.0.113.21"), ("db-1-pg17", "203.0.113.22")],
    }


def test_retire_lifts_protect_data_from_the_old_droplets_only():
    config = {**DROPLETS_UPGRADING, "upgradeFrom": {"postgresVersion": 15, "retire": True}}
    run = run_program(config)
    stateful = [*by_name(run, "/droplet:Droplet"), *by_name(run, "/volume:Volume")]
    assert sorted(n for n in stateful if run.options[n].protect) == [
        "db-pg17-0", "db-pg17-0-data", "db-pg17-1", "db-pg17-1-data"
    ]  # fmt: skip


def remote_names(run) -> set[str]:
    return {r.name for r in run.of_type("remote:Command")}


def test_each_generation_runs_its_steps_under_its_versions_name():
    run = run_program(UPGRADING)
    names = remote_names(run)
    assert {"replication-pg15-primary", "replication-pg15-replica-db2",
            "replication-pg17-primary", "replication-pg17-replica-new2"} <= names  # fmt: skip
    assert {n.split("-")[1] for n in names if n.startswith("replication-")} == {"pg15", "pg17"}
    # The old generation holds the names of the stack's steps before generations; the new none.
    assert [a.name for a in run.options["replication-pg15"].aliases] == ["replication"]
    assert run.options["replication-pg17"].aliases is None
    primary = json.loads(run.one("remote:Command", "replication-pg17-primary").inputs["stdin"])
    assert primary["params"]["postgres_version"] == 17


def test_the_run_follows_both_generations_and_names_the_side_to_serve():
    run = run_program(UPGRADING)
    command = run.one("command:local:Command", "postgres-upgrade-run")
    assert command.inputs["create"].endswith("-m mastodon_data.cli.bluegreen serve")
    assert command.inputs["delete"].endswith("-m mastodon_data.cli.bluegreen retire")
    assert "stdin" in command.secret_inputs
    given = json.loads(command.inputs["stdin"])
    assert given["serve"] == "new" and given["ssh_private_key"] == SECRETS["sshPrivateKey"]
    old, new = given["generations"]["old"], given["generations"]["new"]
    assert (old["replication"]["postgres_version"], new["replication"]["postgres_version"]) == (
        15, 17,
    )  # fmt: skip
    assert [h["name"] for h in old["hosts"]] == ["db1", "db2"]
    assert [h["name"] for h in new["hosts"]] == ["new1", "new2"]
    after = [d._name for d in run.options["postgres-upgrade-run"].depends_on]
    assert after == ["replication-pg15", "replication-pg17"]


@pytest.mark.parametrize(("serve", "host"), [("new", "10.0.0.21"), ("old", "10.0.0.1")])
def test_mastodons_env_names_the_primary_of_the_side_that_serves(serve, host):
    upgrade = {**UPGRADING["upgradeFrom"], "serve": serve}
    run = run_program({**UPGRADING, "upgradeFrom": upgrade})
    assert run.outputs["mastodon_env"]["DB_HOST"] == host


def test_a_stack_without_an_upgrade_keeps_its_steps_under_the_old_name_too():
    run = run_program({**hosts_stack(replicas=1), "postgresVersion": 15})
    assert [a.name for a in run.options["replication-pg15"].aliases] == ["replication"]
    assert "postgres-upgrade-run" not in {r.name for r in run.resources}
    assert "upgrade" not in run.outputs


class Driver:
    """BlueGreen's calls recorded; each server's `state` as the test sets it."""

    def __init__(self, states: dict[str, dict]):
        self.states, self.calls = states, []
        old, new = (type("G", (), {"hosts": (type("H", (), {"name": n})(),)})() for n in "ON")
        self.generations, self.hosts = {"old": old, "new": new}, {"O": None, "N": None}

    def upgrade(self, on, action, peer=None, **values):
        self.calls.append((action, on))
        if action == "state":
            return self.states[on]
        return {"restart_s": None, "db_user_scram": "4096:salt", "changed": [], "refreshed": [],
                "detached": True}  # fmt: skip

    def publish(self, on, peer):
        self.calls.append(("publish", on))
        return {"restart_s": None, "db_user_scram": "4096:salt"}

    def sync_times(self, on, peer, limit):
        self.calls.append(("sync", on))
        return {"in_sync_s": 0.1}

    def cut_over(self, old, new, pools):
        self.calls.append(("cut_over", old, new))
        return {"paused_s": 1.0}

    def turn_around(self, old, new):
        self.calls.append(("turn_around", old, new))

    def send_writes(self, old, new, pools):
        self.calls.append(("send_writes", old, new))


def side(subscriptions=(), read_only=False) -> dict:
    return {"subscriptions": list(subscriptions), "published": True, "read_only": read_only}


def runs(states: dict, serve: str) -> tuple[dict, list]:
    driver = Driver(states)
    report = Upgrade(driver, 60).serve(serve)
    return report, [c for c in driver.calls if c[0] != "state"]


def test_the_run_prepares_and_cuts_over_once_and_then_does_nothing():
    report, calls = runs({"O": side(), "N": side()}, "new")
    assert calls == [("publish", "O"), ("publish", "N"), ("seed", "N"), ("sync", "N"),
                     ("refresh_views", "N"), ("cut_over", "O", "N")]  # fmt: skip
    assert report["serving"] == "new"
    done = {"O": side(["mdata_from_n"]), "N": side()}  # the old primary follows the new one
    assert runs(done, "new") == ({"serving": "new", "cut_over": None}, [])


def test_serve_old_prepares_without_a_cut_over_and_rolls_back_after_one():
    report, calls = runs({"O": side(), "N": side()}, "old")
    assert report["serving"] == "old" and not any(c[0] == "cut_over" for c in calls)
    report, calls = runs({"O": side(["mdata_from_n"]), "N": side()}, "old")
    assert calls == [("sync", "O"), ("cut_over", "N", "O")] and report["serving"] == "old"


def test_a_cut_over_cut_short_after_the_detach_is_finished_first():
    stuck = {"O": side(read_only=True), "N": side()}
    driver = Driver(stuck)

    def turned(old, new):
        driver.calls.append(("turn_around", old, new))
        stuck["O"] = side(["mdata_from_n"])  # the old primary follows the new one now

    driver.turn_around = turned
    report = Upgrade(driver, 60).serve("new")
    assert [c for c in driver.calls if c[0] != "state"] == [
        ("turn_around", "O", "N"), ("send_writes", "O", "N"),
    ]  # fmt: skip
    assert report == {"serving": "new", "cut_over": None, "finished_cut_over_to": "N"}


def test_retirement_is_refused_while_the_old_servers_take_the_writes():
    driver = Driver({"O": side(), "N": side(["mdata_from_o"])})
    with pytest.raises(host_ssh.StepFailed, match=r"the old servers \(O \.\.\.\) still take"):
        Upgrade(driver, 60).retire()
    driver = Driver({"O": side(["mdata_from_n"]), "N": side()})
    assert Upgrade(driver, 60).retire()["retired"] == "O"
    assert ("detach", "O") in driver.calls and ("retire", "N") in driver.calls


@pytest.mark.parametrize(("serve", "servers"), [("new", ("new1", "new2")), ("old", ("db1", "db2"))])
def test_the_read_endpoint_follows_the_side_that_serves(serve, servers):
    upgrade = {**UPGRADING["upgradeFrom"], "serve": serve}
    haproxy = run_program({**UPGRADING, "upgradeFrom": upgrade}).outputs["read_endpoint_haproxy"]
    listed = [
        line.split()[1] for line in haproxy.splitlines() if line.strip().startswith("server ")
    ]
    assert tuple(listed) == (*servers, f"{servers[0]}-primary")  # the primary: the backup


def test_admin_keys_go_to_each_tier_under_names_of_its_own():
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOkBD4GiLr1kxOzTjkXhN8cDkQ8WM8yV8QSTQJ3ZTvsW admin"
    run = run_program({**DROPLETS_UPGRADING, "authorizedKeys": [key]})
    names = sorted(c.name for c in run.of_type("remote:Command") if c.name.startswith("admin"))
    assert names == ["admin-keys-db-0", "admin-keys-db-1", "admin-keys-pg17-db-0",
                     "admin-keys-pg17-db-1"]  # fmt: skip


class ListedStack:
    """A Stack as the backups command reads it: `pulumi config --json`'s listing, outputs."""

    def __init__(self, config: dict, secrets: dict, outputs: dict):
        listing = {f"mastodon-data:{k}": {"value": v} for k, v in config.items()}
        listing |= {f"mastodon-data:{k}": {"value": v, "secret": True} for k, v in secrets.items()}
        for item in listing.values():
            if isinstance(item["value"], dict | list):
                item["objectValue"] = item.pop("value")
        self.listing, self.given = listing, outputs

    def config_listing(self) -> dict:
        return self.listing

    def outputs(self) -> dict:
        return self.given


BACKUPS = {"backups": True, "backupBucket": "mastodon-pg-backups"}
BACKUP_SECRETS = {**SECRETS, "backupCipherPassphrase": "backup-passphrase-0123456789"}
KEY = {"access_key_id": "KEYID", "secret_access_key": "SECRET"}


def test_backups_run_on_the_old_primary_until_the_retirement():
    from mastodon_data.cli.backups import BackupStack

    old_primary = {"name": "db-0", "public_address": "203.0.113.1", "private_address": "10.0.0.1"}
    run = run_program({**DROPLETS_UPGRADING, **BACKUPS}, secrets=BACKUP_SECRETS)
    assert run.outputs["backup_primary"]["public_address"] == "203.0.113.1"  # the 15 tier's
    backup_steps = sorted(c.name for c in run.of_type("remote:Command") if "-backup-" in c.name)
    assert backup_steps == [f"replication-pg15-backup-db-{n}" for n in (0, 1)]  # none on 17 yet
    outputs = {"backup_key": KEY, "backup_primary": old_primary, "primary": {"name": "x"}}
    stack = BackupStack.read(ListedStack({**DROPLETS_UPGRADING, **BACKUPS}, BACKUP_SECRETS,
                                         outputs))  # fmt: skip
    assert (stack.primary.public_address, stack.replication.postgres_version) == (
        "203.0.113.1", 15,
    )  # fmt: skip
    hosts = {**UPGRADING, **BACKUPS, "backupAccessKeyId": "KEYID"}
    secrets = {**BACKUP_SECRETS, "backupSecretAccessKey": "SECRET"}
    stack = BackupStack.read(ListedStack(hosts, secrets, {"backup_key": KEY}))
    assert (stack.primary.name, stack.replication.postgres_version) == ("db1", 15)
    settled = {
        **hosts_stack(replicas=1),
        **BACKUPS,
        "backupAccessKeyId": "KEYID",
        "postgresVersion": 17,
    }
    stack = BackupStack.read(ListedStack(settled, secrets, {"backup_key": KEY}))
    assert (stack.primary.name, stack.replication.postgres_version) == ("db1", 17)
