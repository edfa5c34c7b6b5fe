"""The policy pack as a pack directory (`--policy-pack policy`, what the workflows pass) and the
example stacks previewed with the real DigitalOcean provider (dummy token, no network), through
the real CLI and language host. The pull-request comment is made by the workflow's own script."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from enginekit import DROPLETS, POLICY, SECRETS, engine_stack, example_config, pack_venv

from lab.stack import ROOT

pytestmark = pytest.mark.engine

PACK = ("--policy-pack", str(POLICY), "--policy-pack-config", str(POLICY / "config.json"))
BAD_ADMIN = "203.0.113.9/32"  # fine for the program (a /32), not an address the pack allows
ALLOWED = ["198.51.100.0/24"]  # DROPLETS' admin is 198.51.100.7/32
# What each example stack creates, by resource type (a plain preview: nothing exists yet).
EXPECTED = {
    "dev": {  # droplets: a primary and one replica in a VPC behind a cloud firewall
        "pulumi:pulumi:Stack": 1,
        "mastodon-data:index:PrivateNetwork": 1,  # the VPC, the droplets' as managed mode's
        "mastodon-data:index:DropletTier": 1,
        "mastodon-data:index:ReplicationSteps": 1,
        "digitalocean:index/vpc:Vpc": 1,
        "digitalocean:index/tag:Tag": 1,  # one for every database droplet
        "digitalocean:index/droplet:Droplet": 2,
        "digitalocean:index/volume:Volume": 2,  # each droplet's data volume
        "digitalocean:index/volumeAttachment:VolumeAttachment": 2,
        "digitalocean:index/firewall:Firewall": 1,
        # primary, replica, slots; per host a volume step, a status report, a pooler and a
        # health endpoint
        "command:remote:Command": 11,
    },
    "prod": {  # managed PostgreSQL + read-only node, Spaces + CDN, Valkey
        "pulumi:pulumi:Stack": 1,
        "mastodon-data:index:PrivateNetwork": 1,
        "mastodon-data:index:ManagedPostgres": 1,
        "mastodon-data:index:SpacesMedia": 1,
        "mastodon-data:index:ManagedValkey": 1,
        "digitalocean:index/vpc:Vpc": 1,
        "digitalocean:index/databaseCluster:DatabaseCluster": 2,  # PostgreSQL, Valkey
        "digitalocean:index/databaseReplica:DatabaseReplica": 1,
        "digitalocean:index/databaseDb:DatabaseDb": 1,
        "digitalocean:index/databaseUser:DatabaseUser": 1,
        "digitalocean:index/databaseConnectionPool:DatabaseConnectionPool": 1,
        "digitalocean:index/databaseFirewall:DatabaseFirewall": 3,  # cluster, replica, Valkey
        "digitalocean:index/databaseValkeyConfig:DatabaseValkeyConfig": 1,
        "digitalocean:index/spacesBucket:SpacesBucket": 1,
        "digitalocean:index/spacesBucketCorsConfiguration:SpacesBucketCorsConfiguration": 1,
        "digitalocean:index/spacesKey:SpacesKey": 1,
        "digitalocean:index/certificate:Certificate": 1,
        "digitalocean:index/cdn:Cdn": 1,
        "command:local:Command": 1,  # the major upgrade's rehearsal (runs only when upgrading)
    },
}


@pytest.fixture(scope="module", autouse=True)
def pack():
    pack_venv()


def planned(stack) -> Counter:
    """Resource types and how many of each a preview would create (`pulumi preview --json`)."""
    steps = json.loads(stack.preview("--json", *PACK))["steps"]
    assert {s["op"] for s in steps} == {"create"}
    return Counter(s["urn"].split("::")[2].rpartition("$")[2] for s in steps)


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_example_stack_passes_the_pack_with_the_real_provider(tmp_path, name):
    config = example_config(name)
    secrets = SECRETS if config.get("postgresMode", "droplets") != "managed" else {}
    stack = engine_stack(tmp_path, name, config, secrets)
    assert dict(planned(stack)) == EXPECTED[name]


def pack_config(tmp: Path, allowed: list[str]) -> str:
    """The committed pack configuration with `allowedCidrs` set, as an operator would."""
    document = json.loads((POLICY / "config.json").read_text())
    document["ssh-only-from-admin-cidrs"]["allowedCidrs"] = allowed
    path = tmp / "policy-config.json"
    path.write_text(json.dumps(document))
    return str(path)


@pytest.mark.parametrize("admin", ["198.51.100.7/32", BAD_ADMIN])
def test_the_pack_allows_listed_admins_and_refuses_others(tmp_path, admin):
    stack = engine_stack(tmp_path, "admins", {**DROPLETS, "adminCidrs": [admin]}, SECRETS)
    packs = ("--policy-pack", str(POLICY), "--policy-pack-config", pack_config(tmp_path, ALLOWED))
    stack.preview(*packs, check=False)
    out = stack.last.stdout + stack.last.stderr
    if admin != BAD_ADMIN:
        assert stack.last.returncode == 0, out
        assert "mastodon-data@v0.1.0" in out
        return
    out = stack.last.stdout + stack.last.stderr
    assert stack.last.returncode != 0
    assert "[mandatory]  ssh-only-from-admin-cidrs" in out
    assert f"opens SSH (port 22) to {BAD_ADMIN}" in out


def test_pull_request_comment_lists_every_resource_and_no_secret(tmp_path):
    stack = engine_stack(tmp_path, "dev", example_config("dev"), SECRETS)
    urns = [s["urn"] for s in json.loads(stack.preview("--json", *PACK))["steps"]]
    comment = tmp_path / "preview.md"
    result = subprocess.run(
        ["bash", str(ROOT / ".github" / "scripts" / "preview_comment.sh"), "dev", str(comment)],
        cwd=stack.workdir,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = comment.read_text()
    assert text.startswith("<!-- mastodon-data preview: dev -->\n")
    assert "passes the policy pack" in text
    missing = [urn for urn in urns if urn.rpartition("::")[2] not in text]
    assert missing == []
    for value in SECRETS.values():
        for line in value.splitlines():
            assert line not in text or line.startswith("-----")
