"""A stack made before a change of layout keeps its resources: its state, with the URNs the
program used to give them, is imported into a stack of the current program and `pulumi preview`
(real CLI, language host and DigitalOcean provider, offline) must create, replace or delete no
DigitalOcean resource. The state is this program's own preview with the former URNs put back.

Former URNs kept by aliases:
- droplets mode: the VPC was `db-vpc` under the DropletTier `db`; it is now `network-vpc` under the
  stack's PrivateNetwork `network` (mastodon_data/components/network.py). Without the alias the
  preview deletes that VPC and replaces both droplets."""

from __future__ import annotations

import json

import pytest
from enginekit import SECRETS, engine_stack, example_config

pytestmark = pytest.mark.engine

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # Pulumi's marker of a value not known yet
PROVIDER_ID = "00000000-0000-4000-8000-000000000001"
# What the provider reports beyond the inputs (else the preview shows updates of them).
COMPUTED = {
    "droplet:Droplet": {"backups": False, "gracefulShutdown": False, "volumeIds": []},
    "firewall:Firewall": {"pendingChanges": []},
}


def known(value):
    if isinstance(value, list):
        return [known(v) for v in value]
    if isinstance(value, dict):
        return {k: known(v) for k, v in value.items()}
    return None if value == UNKNOWN else value


def former_state(steps: list[dict], renamed: dict[str, str]) -> list[dict]:
    """The resources a first `up` of `steps` would have left, under their former URNs
    (`renamed`: current URN -> former URN), with ids and the provider's outputs."""
    stack_urn = steps[0]["urn"]
    prefix = stack_urn.rpartition("::")[0].rpartition("::")[0]
    provider = f"{prefix}::pulumi:providers:digitalocean::default_4_84_1"
    tier = f"{prefix}::mastodon-data:index:DropletTier::db"
    version = {"version": "4.84.1"}
    resources = [
        {"urn": stack_urn, "custom": False, "type": "pulumi:pulumi:Stack"},
        {"urn": provider, "custom": True, "id": PROVIDER_ID, "inputs": version,
         "outputs": version, "type": "pulumi:providers:digitalocean"},
        {"urn": tier, "custom": False, "parent": stack_urn,
         "type": "mastodon-data:index:DropletTier"},
    ]  # fmt: skip
    ids: dict[str, str] = {}
    for step in steps:
        state = step["newState"]
        if not state["type"].startswith("digitalocean:"):
            continue
        urn = renamed.get(state["urn"], state["urn"])
        ids[urn] = str(1001 + len(ids))
        inputs = known(state["inputs"])
        outputs = {k: v for k, v in inputs.items() if k != "__defaults"}
        outputs |= COMPUTED.get(state["type"].rpartition("/")[2], {})
        resources.append(
            {"urn": urn, "custom": True, "id": ids[urn], "type": state["type"], "parent": tier,
             "inputs": inputs, "outputs": outputs, "provider": f"{provider}::{PROVIDER_ID}",
             "dependencies": [renamed.get(d, d) for d in state.get("dependencies", [])]}
        )  # fmt: skip
    return fill_ids(resources, ids)


def fill_ids(resources: list[dict], ids: dict[str, str]) -> list[dict]:
    """The references a preview cannot know (the VPC's id, the droplets' ids) filled in."""
    vpc = next(i for urn, i in ids.items() if urn.endswith("vpc:Vpc::db-vpc"))
    droplets = [int(i) for urn, i in ids.items() if "droplet:Droplet::" in urn]
    for resource in resources:
        kind = resource["type"].rpartition("/")[2]
        for key in ("inputs", "outputs"):
            if kind == "droplet:Droplet":
                resource[key]["vpcUuid"] = vpc
            elif kind == "firewall:Firewall":
                resource[key]["dropletIds"] = droplets
    return resources


def test_a_droplets_stack_made_when_the_tier_owned_its_vpc_keeps_vpc_and_droplets(tmp_path):
    stack = engine_stack(tmp_path, "dev", example_config("dev"), SECRETS)
    steps = json.loads(stack.preview("--json"))["steps"]
    prefix = steps[0]["urn"].rpartition("::")[0].rpartition("::")[0]
    vpc = "digitalocean:index/vpc:Vpc"
    current = f"{prefix}::mastodon-data:index:PrivateNetwork${vpc}::network-vpc"
    former = f"{prefix}::mastodon-data:index:DropletTier${vpc}::db-vpc"
    document = json.loads(stack.pulumi("stack", "export"))
    document["deployment"]["resources"] = former_state(steps, {current: former})
    state_file = tmp_path / "former-state.json"
    state_file.write_text(json.dumps(document))
    stack.pulumi("stack", "import", "--file", str(state_file))

    preview = json.loads(stack.preview("--json"))
    changes = {
        step["urn"].rpartition("::")[2]: step["op"]
        for step in preview["steps"]
        if step["urn"].split("::")[2].rpartition("$")[2].startswith("digitalocean:")
        and step["op"] != "same"  # listed when only `protect` changes (the droplets)
    }
    assert changes == {}, changes  # no create, update, replace or delete of any of them
    # the stack, the tier, the VPC, the tag, two droplets, the firewall
    assert preview["changeSummary"]["same"] == 7
    assert set(preview["changeSummary"]) == {"same", "create"}  # create: new components, steps
