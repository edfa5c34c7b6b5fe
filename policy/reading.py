"""How the rules read what the engine hands a policy: the resource type tokens, and the
properties read without tripping over a value a preview does not know yet.

What the engine hands a policy (read from pulumi-policy 1.21.0 and the CLI's source):
- `args.props` are the resource's properties under their *Pulumi* names, i.e. camelCase
  (`inboundRules`, `portRange`, `sourceAddresses`, `privateNetworkUuid`, `clusterId`): inputs for
  a resource policy, the final outputs for a stack policy. During a preview a value that is not
  known yet raises `UnknownValueError` when read; the SDK turns that into an advisory note, so the
  rules read only what they need, in an order that avoids values known only after `up`.
- A stack policy gets every resource of the stack (`args.resources`), the root
  `pulumi:pulumi:Stack` resource among them with the stack's outputs as its properties, and each
  resource's `property_dependencies` (which resource fed which property).
- Secretness: the CLI sends secret values marked (`KeepSecrets: true` in AnalyzeStack), but the
  Python SDK's AnalyzeStack deserializes without `proxy_secrets`, which drops the mark: a Python
  stack policy cannot tell a secret output from a plain one. `validate_secret_outputs` therefore
  judges only when the marks are there (tests, a future SDK) and otherwise says it is not
  applicable and why; what the engine does let a policy see, `opts.additional_secret_outputs`,
  is enforced on the resources by `validate_resource_secrets`, and the program's outputs are
  checked on Pulumi's mocks by the unit tests (tests/unit/test_policy.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy.proxy import UnknownValueError

# Resource types (Pulumi type tokens) the rules look at.
FIREWALL = "digitalocean:index/firewall:Firewall"
DATABASE_FIREWALL = "digitalocean:index/databaseFirewall:DatabaseFirewall"
DATABASE_CLUSTER = "digitalocean:index/databaseCluster:DatabaseCluster"
DATABASE_REPLICA = "digitalocean:index/databaseReplica:DatabaseReplica"
DATABASE_POOL = "digitalocean:index/databaseConnectionPool:DatabaseConnectionPool"
DATABASE_USER = "digitalocean:index/databaseUser:DatabaseUser"
SPACES_BUCKET = "digitalocean:index/spacesBucket:SpacesBucket"
SPACES_BUCKET_POLICY = "digitalocean:index/spacesBucketPolicy:SpacesBucketPolicy"
SPACES_KEY = "digitalocean:index/spacesKey:SpacesKey"
DROPLET = "digitalocean:index/droplet:Droplet"
VOLUME = "digitalocean:index/volume:Volume"
REMOTE_COMMAND = "command:remote:Command"
STACK = "pulumi:pulumi:Stack"
STRING_LIST = {"type": "array", "items": {"type": "string"}}  # a policy config schema


def get(props: Mapping, key: str, default: Any = None) -> Any:
    value = props.get(key, default)
    return default if value is None else value


def known(props: Mapping, key: str, default: Any = None) -> Any:
    """props[key], or `default` when absent or not known yet (a preview)."""
    try:
        return get(props, key, default)
    except UnknownValueError:
        return default


def has(props: Mapping, key: str) -> bool:
    """Whether `key` is set (to anything, known or not) without reading its value."""
    if key not in list(iter(props)):
        return False
    try:
        return props[key] not in (None, "")
    except UnknownValueError:
        return True  # set, from another resource's output not known before `up`


def empty(value: Any) -> bool:
    if isinstance(value, Mapping | Sequence) and not isinstance(value, str | bytes):
        return len(value) == 0
    return value is None or value == ""


def words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def config_list(args, key: str, default: Sequence[str]) -> list[str]:
    config = args.get_config() or {}
    value = config.get(key)
    return list(default) if value is None else [str(v) for v in value]
