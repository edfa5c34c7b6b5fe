"""The project's managed stack (Pulumi.prod.yaml's shape) on the DigitalOcean stand-in, through the
real engine and provider: up, a quiet refreshed preview with the policy pack, then Mastodon's
env used from an app droplet with the stack's appTag (tests/lab/managed_app_probe.py) as Mastodon
uses it, the trusted sources, DigitalOcean's alert policies over the cluster (alertEmails), and
the end: destroy refused while protected, then nothing left.

Lab `mlms`: public network 10.241.110.0/24, VPC 10.240.110.0/24."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from standinkit import standin_account, tcp

from lab.stack import ROOT
from lab.standin._lab import OPERATOR_COMMAND
from lab.standin.client import Client
from lab.standin.service import StandInLab
from lab.standin.stack import managed_config, provider_spaces_key, standin_stack

LAB = StandInLab(
    prefix="mlms",
    public_network="10.241.110.0/24",
    vpc_pool=("10.240.110.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-managed-test"),
)
pytestmark = [pytest.mark.engine, pytest.mark.lab]
STACK = "mms"
POLICY = ROOT / "policy"
PROBE = Path(__file__).parent / "managed_app_probe.py"
RESUME_BOUND = 20  # seconds from the primary's death to a write accepted through the env
ALERT_EMAIL = "dba@example.org"


class Managed:
    def __init__(self, client: Client, key_id: int, workdir: Path):
        self.client = Client(client.url, token=f"dop_v1_standin-{STACK}")
        self.config = managed_config(
            LAB.vpc_pool[0], "mlms-media", appTag="mlms-app", alertEmails=[ALERT_EMAIL]
        )
        self.stack = standin_stack(LAB, self.client, STACK, workdir, self.config, {})
        self.stack.timeout = 900
        self.up = self.stack.up()
        self.outputs = self.stack.outputs()
        self.app = self.client.ensure_droplet({
            "name": "mlms-app-1", "region": self.config["region"], "size": "s-1vcpu-1gb",
            "image": "debian-12-x64", "vpc_uuid": self.outputs["vpc_id"],
            "tags": [self.config["appTag"]], "ssh_keys": [key_id],
        })  # fmt: skip
        self.app_host = self.client.state()["droplets"][str(self.app["id"])]

    @property
    def env(self) -> dict:
        return self.outputs["mastodon_env"]

    def on_app(self, *argv: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            LAB.hosts.on_host_command(self.app_host, *argv),
            input=stdin, capture_output=True, text=True, timeout=180, cwd=ROOT,
        )  # fmt: skip

    def probe(self, name: str, **extra) -> dict:
        data = {"env": self.env, "migration": self.outputs["migration_env"],
                "ca": self.outputs["postgres_ca_cert"], **extra}  # fmt: skip
        result = self.on_app(sys.executable, str(PROBE), name, stdin=json.dumps(data))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def address(self, name: str) -> str:
        """What `name` resolves to on the app side."""
        for line in LAB.hosts.hosts_file.read_text().splitlines():
            address, _, host = line.partition(" ")
            if host.strip() == name:
                return address
        raise AssertionError(f"{name} is not in the lab's hosts file")


@pytest.fixture(scope="module")
def managed(tmp_path_factory):
    with standin_account(LAB) as (client, key_id):
        yield Managed(client, key_id, tmp_path_factory.mktemp("managed") / STACK)


def test_a_second_up_changes_nothing_and_a_refresh_is_quiet_under_the_policy_pack(managed):
    managed.stack.up()
    changes = managed.stack.last_changes()
    assert set(changes) == {"same"}, changes
    pack = ("--policy-pack", str(POLICY), "--policy-pack-config", str(POLICY / "config.json"))
    out = managed.stack.preview("--refresh", "--expect-no-changes", *pack, check=False)
    assert managed.stack.last.returncode == 0, out + managed.stack.last.stderr


def test_the_metrics_endpoints_are_the_clusters_nodes(managed):
    (cluster,) = [
        c for c in managed.client.call("GET", "/v2/databases")["databases"] if c["engine"] == "pg"
    ]
    assert managed.outputs["prometheus_targets"] == [
        {
            "targets": [f"{e['host']}:{e['port']}" for e in cluster["metrics_endpoints"]],
            "labels": {"job": "do_postgres", "cluster": cluster["name"], "__scheme__": "https"},
        }
    ]
    assert len(cluster["metrics_endpoints"]) == managed.config["dbNodeCount"]
    assert "prometheus_basic_auth" not in managed.outputs  # the account's: no API call at preview


def test_digitaloceans_alert_policies_watch_the_cluster(managed):
    (cluster,) = [
        c for c in managed.client.call("GET", "/v2/databases")["databases"] if c["engine"] == "pg"
    ]
    policies = managed.client.call("GET", "/v2/monitoring/alerts")["policies"]
    assert {p["type"]: p["value"] for p in policies} == {
        "v1/dbaas/alerts/cpu_alerts": 90.0,
        "v1/dbaas/alerts/memory_utilization_alerts": 90.0,
        "v1/dbaas/alerts/disk_utilization_alerts": 80.0,
    }
    for policy in policies:
        assert policy["entities"] == [cluster["id"]], policy
        assert policy["alerts"]["email"] == [ALERT_EMAIL], policy
        assert policy["enabled"] is True


def test_mastodons_role_creates_tables_only_after_grant(managed):
    before = managed.probe("create_table")
    assert before["ok"] is False
    assert "permission denied for schema public" in before["error"]
    document = json.dumps(managed.outputs)
    granted = managed.on_app(str(OPERATOR_COMMAND), "grant", stdin=document)
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout.strip() == (
        "mastodon may now create its tables in mastodon_production (schema public)"
    )
    assert managed.probe("create_table") == {"ok": True}


def test_the_pool_is_in_transaction_mode_and_the_env_disables_prepared_statements(managed):
    assert managed.env["PREPARED_STATEMENTS"] == "false"
    forced = managed.probe("prepared_forced")["errors"]
    assert forced and all("prepared statement" in e for e in forced), forced
    assert managed.probe("prepared_as_emitted") == {"errors": []}


def test_the_cluster_has_digitaloceans_connection_limit_for_its_size(managed):
    # db-s-4vcpu-8gb: 25 per GiB; the pool's 150 fit in the 197 left after the 3 reserved.
    assert managed.config["dbClusterSize"] == "db-s-4vcpu-8gb"
    assert managed.probe("server_limits") == {"max_connections": "200"}


def test_migrations_hold_a_session_lock_past_the_pool(managed):
    answer = managed.probe("advisory")
    assert answer["held"] is True
    assert answer["port"] == 25060 == int(managed.outputs["migration_env"]["DB_PORT"])


def test_a_row_written_through_the_pool_is_read_on_the_read_only_node(managed):
    assert managed.probe("replica_read") == {"recovery": True, "seen": True}


def test_verify_full_holds_on_every_host_name_of_the_env(managed):
    assert managed.probe("verify_full") == {
        "DB_HOST": "mastodon",
        "REPLICA_DB_HOST": "mastodon",
        "migration DB_HOST": "mastodon",
    }


def test_redis_is_tls_only_with_sidekiqs_eviction_policy(managed):
    answer = managed.probe("redis")
    assert answer["REDIS_URL"] == {
        "scheme": "rediss", "get": "1", "policy": "noeviction", "plain": "ConnectionError",
    }  # fmt: skip


def test_media_uploaded_with_the_env_is_served_by_the_cdn(managed):
    answer = managed.probe("s3")
    assert answer.get("same") is True and answer["status"] == 200, answer
    assert answer["url"].startswith(f"https://{managed.env['S3_ALIAS_HOST']}/media/")


def test_only_the_trusted_sources_reach_the_databases(managed):
    env = managed.env
    targets = {
        "pool": (env["DB_HOST"], int(env["DB_PORT"])),
        "primary": (managed.outputs["migration_env"]["DB_HOST"], 25060),
        "replica": (env["REPLICA_DB_HOST"], int(env["REPLICA_DB_PORT"])),
        "redis": (managed.outputs["redis"]["host"], int(managed.outputs["redis"]["port"])),
    }
    seen = {}
    for name, (host, port) in targets.items():
        address = managed.address(host)
        seen[name] = (tcp(address, port, LAB.hosts.netns(managed.app_host)), tcp(address, port))
    # The app droplet (tagged) is let in; the operator's own address in the VPC is not.
    assert seen == {name: ("open", "timeout") for name in targets}, seen


def test_the_standby_takes_over_under_writes_through_the_env_with_no_pulumi_up(managed):
    """The primary node powered off under writes through the pool: writes resume through the
    same env within the bound; what was committed before the kill is there (DigitalOcean's
    standby is asynchronous: a tail may be lost, counted); a refresh shows no change."""
    cluster = next(c for c in managed.client.state()["databases"].values()
                   if c["engine"] == "pg")  # fmt: skip
    data = {"env": managed.env, "migration": managed.outputs["migration_env"],
            "ca": managed.outputs["postgres_ca_cert"], "seconds": 60,
            "table": "takeover"}  # fmt: skip
    writer = subprocess.Popen(
        LAB.hosts.on_host_command(managed.app_host, sys.executable, str(PROBE), "write_load"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT,
    )  # fmt: skip
    writer.stdin.write(json.dumps(data))
    writer.stdin.close()
    lines = [json.loads(writer.stdout.readline()) for _ in range(30)]
    assert all("committed" in line for line in lines), lines
    LAB.hosts.power_off(cluster["nodes"][0])
    killed = time.time()
    lines += [json.loads(line) for line in writer.stdout]
    assert writer.wait(timeout=120) == 0, writer.stderr.read()
    present = lines.pop()["present"]
    first_error = next(e["at"] for e in lines if "error" in e)
    before = [e["committed"] for e in lines if "committed" in e and e["at"] < first_error]
    resumed = next(e["at"] for e in lines if "committed" in e and e["at"] > first_error)
    lost = [n for n in before if n not in present]
    print(f"takeover: writes resumed {resumed - killed:.1f} s after the kill; "
          f"{len(before) - len(lost)} of {len(before)} rows committed before it there")  # fmt: skip
    assert resumed - killed < RESUME_BOUND
    assert lost == before[len(before) - len(lost) :]  # at most a tail (WAL streams in order)
    assert managed.probe("verify_full") == {
        "DB_HOST": "mastodon", "REPLICA_DB_HOST": "mastodon", "migration DB_HOST": "mastodon",
    }  # fmt: skip
    out = managed.stack.preview("--refresh", "--expect-no-changes", check=False)
    assert managed.stack.last.returncode == 0, out + managed.stack.last.stderr


def test_destroy_is_refused_while_protected_then_leaves_nothing(managed):
    stack = managed.stack
    refused = stack.pulumi("destroy", "--yes", "--skip-preview", check=False)
    assert stack.last.returncode != 0
    assert "protect" in refused + stack.last.stderr
    managed.config["protectData"] = False
    stack.configure(managed.config, {})
    stack.up()
    # Media is data: the bucket is emptied by the operator (the account's key) before a destroy.
    key = provider_spaces_key(LAB, managed.client)
    assert managed.probe("empty", key=key) == {"deleted": 1}
    managed.client.delete_droplet(managed.app["id"])
    stack.destroy()
    state = managed.client.state()
    assert {k: v for k, v in state.items() if k in ("databases", "droplets") and v} == {}
    assert managed.client.call("GET", "/v2/monitoring/alerts")["policies"] == []
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert [ns for ns in namespaces.split() if ns.startswith(f"{LAB.prefix}-d")] == []
