"""Lifecycle options through the real engine (CLI, language host, DigitalOcean provider, offline,
the policy pack as a directory), on states a first `up` of this program would have left
(lifecyclekit):
- a droplets stack of the earlier layout (a tier named db, droplets named and tagged by role)
  previews with no droplet created, replaced or deleted: the tier takes its version's name
  (db-pg18, an alias), droplet names and tags change in place;
- a protected droplet that a change would replace or remove stops the preview with the resource
  and the reason; protectData false lets the engine go on and the policy pack then refuses, until
  the pack's allowDataLoss is given for that run;
- managed: a changed poolSize replaces the pool delete-first; a changed postgresVersion stops the
  preview unless postgresUpgradeTo names it, and the upgrade is then an update in place."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from enginekit import POLICY, SECRETS, engine_stack, example_config, pack_venv
from lifecyclekit import (
    before_generations,
    import_state,
    kind,
    name_of,
    operations,
    state_from_preview,
)

pytestmark = pytest.mark.engine

DEV = example_config("dev")
MANAGED = {"postgresMode": "managed", "region": "nyc3", "appTag": "mastodon-app",
           "managedReplica": True, "postgresVersion": 17, "poolSize": 50}  # fmt: skip
# The engine's words for a protected resource a run would replace or delete.
NOT_REPLACED = 'unable to replace resource "{}" as it is currently marked for protection.'
NOT_DELETED = 'resource "{}" cannot be deleted because it is protected.'
PROTECTED = "marked for protection"
CA = "-----BEGIN CERTIFICATE-----\nMIIBstandinca\n-----END CERTIFICATE-----\n"
TIER = "db-pg18"  # the droplet tier of DEV (postgresVersion 18); "db" before generations


def stack_with_state(tmp_path, name: str, config: dict, secrets: dict, **state_options):
    """Stack `name` holding the state a first `up` of `config` would have left."""
    stack = engine_stack(tmp_path, name, config, secrets)
    steps = json.loads(stack.preview("--json"))["steps"]
    import_state(stack, state_from_preview(steps, **state_options), tmp_path)
    return stack


def preview(stack, *extra: str) -> tuple[int, dict | None, str]:
    """(exit code, the JSON preview with every replacement step, what the engine said): the
    JSON form when it passes, the text form (per-resource errors, policy violations) else."""
    out = stack.preview("--json", "--show-replacement-steps", *extra, check=False)
    if stack.last.returncode == 0:
        return 0, json.loads(out), ""
    said = stack.preview(*extra, check=False) + stack.last.stderr
    return stack.last.returncode, None, " ".join(said.split())  # the text form indents


def former_layout(resource: dict) -> list[dict]:
    """The earlier program: droplets db-primary / db-replica-1 with the role in their name and
    tag, two tags; and no `protect` yet."""
    urn, what = resource["urn"], kind(resource["type"])
    resource.pop("protect", None)
    if what == "tag:Tag":
        tags = []
        for role in ("primary", "replica"):
            tags.append({**resource, "urn": urn.replace("::db-nodes", f"::db-{role}"),
                         "id": f"mastodon-data-dev-{role}",
                         "inputs": {"name": f"mastodon-data-dev-{role}"},
                         "outputs": {"name": f"mastodon-data-dev-{role}",
                                     "id": f"mastodon-data-dev-{role}"}})  # fmt: skip
        return tags
    if what == "droplet:Droplet":
        role = "primary" if urn.endswith("::db-primary") else "replica"
        tag_of(resource, role)
        for key in ("inputs", "outputs"):
            resource[key]["name"] = f"mastodon-db-dev-{role}" + ("-1" if role != "primary" else "")
            resource[key]["tags"] = [f"mastodon-data-dev-{role}"]
    if what == "firewall:Firewall":
        tag_of(resource, "replica")
        for key in ("inputs", "outputs"):
            for rule in resource[key]["inboundRules"]:
                if "sourceTags" in rule:
                    rule["sourceTags"] = ["mastodon-data-dev-replica"]
    return [resource]


def tag_of(resource: dict, role: str) -> None:
    """The resource's dependency on the one tag is on the tag of its role instead."""
    resource["dependencies"] = [
        d.replace("::db-nodes", f"::db-{role}") for d in resource.get("dependencies", [])
    ]


def test_a_stack_of_droplets_named_by_role_keeps_every_droplet(tmp_path):
    stack = engine_stack(tmp_path, "dev", DEV, SECRETS)
    steps = json.loads(stack.preview("--json"))["steps"]
    urns = {name_of(s["urn"]): s["urn"] for s in steps}
    renamed = before_generations(urns.values(), TIER)
    renamed[urns[f"{TIER}-0"]] = renamed[urns[f"{TIER}-0"]].replace("::db-0", "::db-primary")
    renamed[urns[f"{TIER}-1"]] = renamed[urns[f"{TIER}-1"]].replace("::db-1", "::db-replica-1")
    import_state(stack, state_from_preview(steps, renamed=renamed, edit=former_layout), tmp_path)

    code, document, said = preview(stack)
    assert code == 0, said[-3000:]
    ops = operations(document)
    droplets = (f"{TIER}-0", f"{TIER}-1")
    assert [ops[d] for d in droplets] == [["update"], ["update"]], ops  # renamed, retagged
    for step in document["steps"]:
        if name_of(step["urn"]) in droplets:
            assert sorted(step["detailedDiff"]) == ["name", "tags[0]"], step["detailedDiff"]
    assert ops[f"{TIER}-nodes"] == ["create"]
    assert ops["db-primary"] == ["delete"] and ops["db-replica"] == ["delete"]
    assert ops[f"{TIER}-firewall"] == ["update"] and "network-vpc" not in ops  # preview: same
    # Every other resource of the tier, its volumes too, is the same one under its new name.
    assert [n for n, o in ops.items() if n.startswith(TIER) and "create" in o] == [f"{TIER}-nodes"]
    replaced = [n for n, o in ops.items() if any("replace" in op for op in o)]
    assert replaced == []


def test_a_change_that_would_replace_or_remove_a_protected_droplet_stops_the_preview(tmp_path):
    # No load balancer: the provider exits on a region change of one whose state this test
    # makes from a preview (no computed fields), before it reports the protected droplets.
    two = {**DEV, "replicaCount": 2, "replicaLoadBalancer": False}
    stack = stack_with_state(tmp_path, "dev", two, SECRETS)
    stack.configure({**two, "region": "sfo3"}, SECRETS)  # forces new ones
    code, _, said = preview(stack)
    assert code != 0
    assert NOT_REPLACED.format(urn(stack, f"{TIER}-0")) in said
    stack.configure({**DEV, "replicaCount": 1}, SECRETS)  # db-2 would go
    code, _, said = preview(stack)
    assert code != 0
    assert NOT_DELETED.format(urn(stack, f"{TIER}-2")) in said


def urn(stack, droplet: str) -> str:
    return (f"urn:pulumi:{stack.name}::mastodon-data::mastodon-data:index:DropletTier$"
            f"digitalocean:index/droplet:Droplet::{droplet}")  # fmt: skip


def pack(tmp_path, allow: bool) -> tuple[str, ...]:
    document = json.loads((POLICY / "config.json").read_text())
    document["ssh-only-from-admin-cidrs"]["allowedCidrs"] = DEV["adminCidrs"]
    document["data-kept"]["allowDataLoss"] = allow
    path = tmp_path / f"pack-{allow}.json"
    path.write_text(json.dumps(document))
    return ("--policy-pack", str(POLICY), "--policy-pack-config", str(path))


def test_unprotected_data_passes_only_a_run_whose_policy_config_allows_it(tmp_path):
    pack_venv()
    stack = stack_with_state(tmp_path, "dev", DEV, SECRETS)
    moved = {**DEV, "region": "sfo3"}  # the droplets must be made anew
    stack.configure({**moved, "protectData": False}, SECRETS)
    code, _, said = preview(stack, *pack(tmp_path, allow=False))
    assert code != 0
    assert "data-kept" in said and f"the database droplet {TIER}-0 is not protected" in said
    assert PROTECTED not in said  # protect comes off in this run: the pack is what stops it
    code, document, said = preview(stack, *pack(tmp_path, allow=True))
    assert code == 0, said[-3000:]
    ops = operations(document)
    for droplet in (f"{TIER}-0", f"{TIER}-1"):
        assert sorted(ops[droplet]) == ["create-replacement", "delete-replaced", "replace"]
    stack.configure(DEV, SECRETS)
    code, _, said = preview(stack, *pack(tmp_path, allow=False))
    assert code == 0, said[-3000:]  # protected: the pack is content


@pytest.fixture
def ca_api():
    """The one API call a preview of an existing managed stack makes (the cluster's CA), answered
    on loopback."""

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the handler's name
            body = json.dumps({"ca": {"certificate": base64.b64encode(CA.encode()).decode()}})
            self.send_response(200 if self.path.endswith("/ca") else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def managed_stack(tmp_path, api: str):
    stack = stack_with_state(tmp_path, "managed", MANAGED, {})
    stack.extra_env["DIGITALOCEAN_API_URL"] = api
    return stack


def test_a_changed_pool_size_replaces_the_pool_delete_first(tmp_path, ca_api):
    stack = managed_stack(tmp_path, ca_api)
    stack.configure({**MANAGED, "poolSize": 60}, {})
    code, document, said = preview(stack)
    assert code == 0, said[-3000:]
    ops = operations(document)
    assert ops["postgres-pool"] == ["delete-replaced", "replace", "create-replacement"], ops
    others = {n: o for n, o in ops.items() if n != "postgres-pool" and o != ["same"]}
    assert others == {}


def test_a_changed_postgres_version_stops_the_preview_unless_the_run_asks(tmp_path, ca_api):
    stack = managed_stack(tmp_path, ca_api)
    stack.configure({**MANAGED, "postgresVersion": 18}, {})
    code, _, said = preview(stack)
    assert code != 0
    assert "mastodon-data:postgresVersion = 18: the managed cluster runs PostgreSQL 17" in said
    assert "pulumi config set mastodon-data:postgresUpgradeTo 18 for this run" in said
    stack.configure({**MANAGED, "postgresVersion": 18, "postgresUpgradeTo": 18}, {})
    code, document, said = preview(stack)
    assert code == 0, said[-3000:]
    (step,) = [s for s in document["steps"] if name_of(s["urn"]) == "postgres-cluster"]
    assert step["op"] == "update" and list(step["detailedDiff"]) == ["version"]
    # The rehearsal runs again (its command names 18), then the cluster's update: nothing else.
    (rehearsal,) = [
        s for s in document["steps"] if name_of(s["urn"]) == "postgres-upgrade-rehearsal"
    ]
    assert (rehearsal["op"], list(rehearsal["detailedDiff"])) == ("update", ["create"])
    assert "--version 18" in rehearsal["newState"]["inputs"]["create"]
    ops = operations(document)
    assert {n: o for n, o in ops.items() if o != ["same"]} == {"postgres-cluster": ["update"]}
