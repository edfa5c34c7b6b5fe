"""A stack made before a change of layout keeps its resources: its state, with the URNs the
program used to give them, is imported into a stack of the current program and `pulumi preview`
(real CLI, language host and DigitalOcean provider, offline) must create, replace or delete no
DigitalOcean resource. The state is this program's own preview with the former URNs put back
(tests/engine/lifecyclekit.py, which the lifecycle tests share).

Former URNs kept by aliases:
- droplets mode: the VPC was `db-vpc` under the DropletTier `db`; it is now `network-vpc` under the
  stack's PrivateNetwork `network` (mastodon_data/components/network.py). Without the alias the
  preview deletes that VPC and replaces both droplets. The tier itself is now named after its
  version (`db-pg18`), with `db` an alias."""

from __future__ import annotations

import json

import pytest
from enginekit import SECRETS, engine_stack, example_config
from lifecyclekit import before_generations, import_state, state_from_preview

pytestmark = pytest.mark.engine

TIER = "mastodon-data:index:DropletTier"
# What a stack of that layout did not have yet (data volumes came later).
NEWER = ("digitalocean:index/volume:Volume", "digitalocean:index/volumeAttachment:VolumeAttachment")


def tier_owned_vpc(former_vpc: str, tier: str):
    """The earlier layout's resources: no PrivateNetwork, the VPC a child of the tier."""

    def edit(resource: dict) -> list[dict]:
        if resource["type"] in ("mastodon-data:index:PrivateNetwork", *NEWER):
            return []
        if resource["urn"] == former_vpc:
            resource["parent"] = tier
        return [resource]

    return edit


def test_a_droplets_stack_made_when_the_tier_owned_its_vpc_keeps_vpc_and_droplets(tmp_path):
    stack = engine_stack(tmp_path, "dev", example_config("dev"), SECRETS)
    steps = json.loads(stack.preview("--json"))["steps"]
    prefix = steps[0]["urn"].rpartition("::")[0].rpartition("::")[0]
    vpc = "digitalocean:index/vpc:Vpc"
    current = f"{prefix}::mastodon-data:index:PrivateNetwork${vpc}::network-vpc"
    former = f"{prefix}::mastodon-data:index:DropletTier${vpc}::db-vpc"
    edit = tier_owned_vpc(former, f"{prefix}::{TIER}::db")
    # ... when the tier was named db, not yet after its version (db-pg18)
    renamed = before_generations((s["urn"] for s in steps), "db-pg18") | {current: former}
    resources = state_from_preview(steps, renamed=renamed, edit=edit, protect=False)
    import_state(stack, resources, tmp_path)

    preview = json.loads(stack.preview("--json"))
    changes = {
        step["urn"].rpartition("::")[2]: step["op"]
        for step in preview["steps"]
        if step["urn"].split("::")[2].rpartition("$")[2].startswith("digitalocean:")
        and step["op"] != "same"  # listed when only `protect` changes (the droplets)
    }
    # No create, update, replace or delete of any of them; only the data volumes are new.
    assert changes == {
        f"db-pg18-{n}-{what}": "create" for n in (0, 1) for what in ("data", "data-attachment")
    }, changes
    # the stack, the tier, the replication component, the VPC, the tag, two droplets, the
    # firewall
    assert preview["changeSummary"]["same"] == 8
    assert set(preview["changeSummary"]) == {"same", "create"}  # create: new components, steps
