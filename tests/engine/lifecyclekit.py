"""A stack's state as a first `up` of this program would have left it, made from the program's
own preview (real CLI, language host and DigitalOcean provider, offline) and imported, so a
second preview shows what a change of settings or of the program does to existing resources."""

from __future__ import annotations

import json
from collections.abc import Callable

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # Pulumi's marker of a value not known yet
PROVIDER_ID = "00000000-0000-4000-8000-000000000001"
PROVIDER_VERSIONS = {"digitalocean": "4.84.1", "command": "1.2.1"}
# The resources a state keeps: the replication steps (remote commands) are made again and change
# no data; a local command (the managed upgrade's rehearsal) is kept as made.
KEPT = ("digitalocean:", "mastodon-data:", "command:local:")
# What the provider reports beyond the inputs (else the preview shows updates of them).
COMPUTED = {
    "droplet:Droplet": {"backups": False, "gracefulShutdown": False, "volumeIds": []},
    "firewall:Firewall": {"pendingChanges": []},
    "databaseCluster:DatabaseCluster": {"metricsEndpoints": []},
    "command:local:Command": {"stdout": "", "stderr": ""},
}


def kind(urn_or_type: str) -> str:
    """ "droplet:Droplet" of a DigitalOcean type or URN."""
    return urn_or_type.rpartition("::")[0].rpartition("/")[2] if "::" in urn_or_type else (
        urn_or_type.rpartition("/")[2]
    )  # fmt: skip


def name_of(urn: str) -> str:
    return urn.rpartition("::")[2]


def state_from_preview(
    steps: list[dict],
    *,
    renamed: dict[str, str] | None = None,
    edit: Callable[[dict], list[dict]] | None = None,
    protect: bool = True,
) -> list[dict]:
    """The resources of `steps` (a preview of an empty stack) as a first `up` would have stored
    them: ids given, unknown references filled with the id of the resource they came from,
    `renamed` URNs (current -> former), `protect` as the program asked when `protect` is on,
    and `edit(resource)` returning the resources that stand for it (former inputs, more)."""
    renamed = renamed or {}
    ids = {s["urn"]: str(1001 + i) for i, s in enumerate(steps)}
    stack_urn = steps[0]["urn"]
    prefix = stack_urn.rpartition("::")[0].rpartition("::")[0]
    providers = {
        package: (f"{prefix}::pulumi:providers:{package}::default_{v.replace('.', '_')}", v)
        for package, v in PROVIDER_VERSIONS.items()
    }
    resources = [{"urn": stack_urn, "custom": False, "type": "pulumi:pulumi:Stack"}] + [
        {"urn": urn, "custom": True, "id": PROVIDER_ID, "inputs": {"version": v},
         "outputs": {"version": v}, "type": f"pulumi:providers:{package}"}
        for package, (urn, v) in providers.items()
    ]  # fmt: skip
    kept = [s for s in steps[1:] if s["newState"]["type"].startswith(KEPT)]
    for step in kept:
        state = step["newState"]
        resource = {
            "urn": renamed.get(state["urn"], state["urn"]),
            "custom": state["custom"],
            "type": state["type"],
            "parent": renamed.get(state.get("parent"), state.get("parent")),
        }
        if state["custom"]:
            inputs = filled(state, ids)
            outputs = {k: v for k, v in inputs.items() if k != "__defaults"}
            outputs |= COMPUTED.get(kind(state["type"]), {})
            if state["type"].startswith("digitalocean:"):
                outputs["uuid"] = ids[state["urn"]]
            resource |= {
                "id": ids[state["urn"]], "inputs": inputs, "outputs": outputs,
                "provider": f"{providers[state['type'].split(':')[0]][0]}::{PROVIDER_ID}",
                "protect": protect and bool(state.get("protect")),
                "dependencies": [renamed.get(d, d) for d in state.get("dependencies", [])],
            }  # fmt: skip
        resources += edit(resource) if edit else [resource]
    return resources


def filled(state: dict, ids: dict[str, str]) -> dict:
    """Inputs with each unknown value replaced by the id of the resource it came from."""
    inputs = dict(state["inputs"])
    for key, value in inputs.items():
        sources = state.get("propertyDependencies", {}).get(key) or []
        if value == UNKNOWN and sources:
            inputs[key] = ids[sources[0]]
        elif isinstance(value, list) and UNKNOWN in value:
            inputs[key] = [int(ids[s]) for s in sources]  # a firewall's droplet ids
    return inputs


def import_state(stack, resources: list[dict], tmp) -> None:
    document = json.loads(stack.pulumi("stack", "export"))
    document["deployment"]["resources"] = resources
    path = tmp / f"{stack.name}-state.json"
    path.write_text(json.dumps(document))
    stack.pulumi("stack", "import", "--file", str(path))


def operations(preview: dict) -> dict[str, list[str]]:
    """Each DigitalOcean resource's operations in the preview, by resource name (in order)."""
    found: dict[str, list[str]] = {}
    for step in preview["steps"]:
        if "$digitalocean:" in step["urn"] or "::digitalocean:" in step["urn"]:
            found.setdefault(name_of(step["urn"]), []).append(step["op"])
    return found


def before_generations(urns, tier: str) -> dict[str, str]:
    """`urns` of the droplet tier `tier` (db-pg<version>) and its children as they were when the
    tier was named db (its children's names starting db-): current -> former."""
    renamed = {}
    for urn in urns:
        head, _, name = urn.rpartition("::")
        if name.startswith(tier):
            renamed[urn] = f"{head}::db{name.removeprefix(tier)}"
    return renamed
