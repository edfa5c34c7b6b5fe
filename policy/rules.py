"""The rules of the mastodon-data policy pack as plain validate functions.

Each `validate_*` function takes the argument bag pulumi-policy hands a policy and a
`report(message, urn=None)` callback; nothing here starts the analyzer server (only
`PolicyPack(...)` does, in __main__.py), so the unit tests call these functions directly.

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

import fnmatch
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import (
    PolicyConfigSchema,
    ResourceValidationPolicy,
    Secret,
    StackValidationPolicy,
)
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

# PostgreSQL, pgBouncer, and DigitalOcean's managed PostgreSQL (direct and pool).
DATABASE_PORTS = (5432, 6432, 25060, 25061)
SSH_PORT = 22
DATABASE_ENGINES = ("pg", "valkey", "redis")
# Outputs DigitalOcean computes that carry a credential; the SDK marks them secret
# (additional_secret_outputs) and a policy can see that mark.
CREDENTIAL_OUTPUTS = {
    DATABASE_CLUSTER: ("password", "uri", "privateUri"),
    DATABASE_REPLICA: ("password", "uri", "privateUri"),
    DATABASE_POOL: ("password", "uri", "privateUri"),
    DATABASE_USER: ("password",),
    SPACES_KEY: ("secretKey",),
}
# Output or variable names that hold a credential: *pass* (password), *secret*, *token*, *key*.
SECRET_NAME = re.compile(r"pass|secret|token|key", re.IGNORECASE)
# migration_env holds host, port, name and a flag, no credential: it stays readable.
DEFAULT_ALWAYS_SECRET = ("mastodon_env",)
# A credential written into a command line: NAME=value, --password value, --password=value.
SECRET_ASSIGNMENT = re.compile(
    r"(?i)(\b\w*(?:pass|secret|token)\w*\s*=\s*['\"]?[^\s'\"$]"
    r"|--(?:password|passwd|secret|token)[= ]\s*['\"]?[^\s'\"$-])"
)
DB_DROPLET_TAG = re.compile(r"^mastodon-data-.+-(primary|replica|db)$")
# Droplet inputs whose change makes a new droplet (and loses a root disk's database); they only
# matter at creation, so the program ignores them afterwards.
DROPLET_CREATE_ONLY = ("sshKeys", "image", "userData")
ALLOW_DATA_LOSS = "allowDataLoss"  # this policy's switch for the one run that may lose data
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # Pulumi's marker of a special value
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # ... that says "secret"

NOT_VISIBLE = (
    "the Python policy SDK (pulumi-policy 1.21.0) drops the secret mark of stack outputs in "
    "AnalyzeStack, so a stack policy cannot tell a secret output from a plain one; the "
    "program's outputs are checked on mocks by tests/unit/test_policy.py, and "
    "secrets-stay-secret checks the resources"
)


# ---------------------------------------------------------------------------------------------
# Helpers (plain data in, plain data out)


def is_everyone(source: Any) -> bool:
    """True for a source that is every address (0.0.0.0/0, ::/0 or any other /0)."""
    try:
        return ipaddress.ip_network(str(source).strip(), strict=False).prefixlen == 0
    except ValueError:
        return False


def port_range_covers(port_range: Any, port: int) -> bool:
    """Whether a DigitalOcean firewall port range ("22", "8000-9000", "all") includes `port`.
    A missing range is read as every port."""
    text = str(port_range or "all").strip().lower()
    if text in ("all", "0", "*"):
        return True
    low, _, high = text.partition("-")
    try:
        return int(low) <= port <= int(high or low)
    except ValueError:
        return True  # unparsable: the cautious answer


def within(source: str, allowed: Sequence[str]) -> bool:
    """Whether the CIDR/address `source` lies inside one of the `allowed` CIDRs."""
    try:
        network = ipaddress.ip_network(str(source).strip(), strict=False)
    except ValueError:
        return False
    for entry in allowed:
        try:
            candidate = ipaddress.ip_network(str(entry).strip(), strict=False)
        except ValueError:
            continue
        if candidate.version == network.version and network.subnet_of(candidate):
            return True
    return False


def is_secret(value: Any) -> bool:
    """A value carrying Pulumi's secret mark (as the SDK's Secret or in wire form)."""
    if isinstance(value, Secret):
        return True
    if isinstance(value, Mapping):
        try:
            return value.get(SECRET_SIG_KEY) == SECRET_SIG
        except UnknownValueError:
            return False
    return False


def _get(props: Mapping, key: str, default: Any = None) -> Any:
    value = props.get(key, default)
    return default if value is None else value


def _known(props: Mapping, key: str, default: Any = None) -> Any:
    """props[key], or `default` when absent or not known yet (a preview)."""
    try:
        return _get(props, key, default)
    except UnknownValueError:
        return default


def _has(props: Mapping, key: str) -> bool:
    """Whether `key` is set (to anything, known or not) without reading its value."""
    if key not in list(iter(props)):
        return False
    try:
        return props[key] not in (None, "")
    except UnknownValueError:
        return True  # set, from another resource's output not known before `up`


def _empty(value: Any) -> bool:
    if isinstance(value, Mapping | Sequence) and not isinstance(value, str | bytes):
        return len(value) == 0
    return value is None or value == ""


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _sources(rule: Mapping) -> list[str]:
    return _words(_get(rule, "sourceAddresses", []))


def _config_list(args, key: str, default: Sequence[str]) -> list[str]:
    config = args.get_config() or {}
    value = config.get(key)
    return list(default) if value is None else [str(v) for v in value]


def _has_secret_mark(value: Any, depth: int = 0) -> bool:
    if is_secret(value):
        return True
    if depth > 20:
        return False
    if isinstance(value, Mapping):
        keys: Any = list(iter(value))
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        keys = range(len(value))
    else:
        return False
    for key in keys:
        try:
            if _has_secret_mark(value[key], depth + 1):
                return True
        except UnknownValueError:
            continue
    return False


def _plain_credentials(value: Any, path: str) -> list[str]:
    """Paths below `value` whose key names a credential and whose value is not secret."""
    if is_secret(value):
        return []
    found = []
    if isinstance(value, Mapping):
        for key in list(iter(value)):
            try:
                item = value[key]
            except UnknownValueError:
                continue
            where = f"{path}.{key}"
            if SECRET_NAME.search(str(key)) and not _empty(item) and not is_secret(item):
                found.append(where)
            else:
                found += _plain_credentials(item, where)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for index in range(len(value)):
            try:
                found += _plain_credentials(value[index], f"{path}[{index}]")
            except UnknownValueError:
                continue
    return found


# ---------------------------------------------------------------------------------------------
# Resource rules


def validate_no_public_database_ports(args, report) -> None:
    """No cloud firewall opens a database port to every address, and no database firewall
    trusts every address."""
    if args.resource_type == FIREWALL:
        for index, rule in enumerate(_get(args.props, "inboundRules", [])):
            if str(_get(rule, "protocol", "tcp")).lower() == "icmp":
                continue
            ports = [p for p in DATABASE_PORTS if port_range_covers(rule.get("portRange"), p)]
            everyone = [s for s in _sources(rule) if is_everyone(s)]
            if ports and everyone:
                report(
                    f"inboundRules[{index}] opens port(s) {', '.join(map(str, ports))} "
                    f"(range {rule.get('portRange') or 'all'}) to {', '.join(everyone)}. "
                    "Fix: allow the app servers' private range or tag only "
                    "(mastodon-data:postgresAllowedSources)."
                )
    elif args.resource_type == DATABASE_FIREWALL:
        for index, rule in enumerate(_get(args.props, "rules", [])):
            if str(_get(rule, "type", "")) == "ip_addr" and is_everyone(rule.get("value")):
                report(
                    f"rules[{index}] trusts ip_addr {rule.get('value')}: every address may "
                    "connect to the database. Fix: trust the app's tag, droplets or private "
                    "range (mastodon-data:appTag / appDropletIds / appCidrs)."
                )


def validate_ssh_only_from_admin_cidrs(args, report) -> None:
    """Port 22 only from the pack's `allowedCidrs` (when listed), and never from everyone."""
    if args.resource_type != FIREWALL:
        return
    allowed = _config_list(args, "allowedCidrs", [])
    for index, rule in enumerate(_get(args.props, "inboundRules", [])):
        if str(_get(rule, "protocol", "tcp")).lower() == "icmp":
            continue
        if not port_range_covers(rule.get("portRange"), SSH_PORT):
            continue
        for source in _sources(rule):
            if is_everyone(source):
                report(
                    f"inboundRules[{index}] opens SSH (port 22) to {source}. Fix: pulumi config "
                    "set --path 'mastodon-data:adminCidrs[0]' <office/VPN/bastion address>/32"
                )
            elif allowed and not within(source, allowed):
                report(
                    f"inboundRules[{index}] opens SSH (port 22) to {source}, which is not in "
                    f"the policy's allowedCidrs ({', '.join(allowed)}). Fix: use a listed "
                    "address in mastodon-data:adminCidrs, or add it to policy/config.json "
                    "(reviewed like any change)."
                )


def _managed_database(resource_type: str, props) -> str | None:
    """ "<engine> cluster" or "read-only node" for a managed database the pack guards, else None."""
    if resource_type == DATABASE_CLUSTER:
        engine = str(_known(props, "engine", ""))
        return f"{engine} cluster" if engine in DATABASE_ENGINES else None
    if resource_type == DATABASE_REPLICA:
        return "read-only node"
    return None


def validate_databases_in_vpc(args, report) -> None:
    """Managed PostgreSQL/Valkey/Redis clusters and read-only nodes sit in a VPC."""
    what = _managed_database(args.resource_type, args.props)
    if what is None:
        return
    if not _has(args.props, "privateNetworkUuid"):
        report(
            f"the {what} {args.name} has no privateNetworkUuid: it would sit in the region's "
            "default VPC, shared with every other droplet of the account. Fix: "
            "private_network_uuid=<the stack's VPC id>."
        )


def validate_spaces_not_listable(args, report) -> None:
    """Nobody lists a Spaces bucket: its ACL stays private and no bucket policy grants
    s3:ListBucket to everyone (Mastodon's objects are public-read one by one)."""
    if args.resource_type == SPACES_BUCKET:
        acl = str(_get(args.props, "acl", "private")).lower()
        if acl != "private":
            report(
                f"bucket {args.name} has acl {acl!r}: anyone can list every object. Fix: "
                "acl='private' (Mastodon uploads each object public-read, S3_PERMISSION)."
            )
    elif args.resource_type == SPACES_BUCKET_POLICY:
        document = _get(args.props, "policy", "")
        try:
            parsed = json.loads(document) if isinstance(document, str) else document
        except ValueError:
            report("the bucket policy is not valid JSON, so nobody can tell what it grants")
            return
        statements = parsed.get("Statement", []) if isinstance(parsed, Mapping) else []
        if isinstance(statements, Mapping):
            statements = [statements]
        for index, statement in enumerate(statements):
            if str(statement.get("Effect", "")).lower() != "allow":
                continue
            if not _anyone(statement.get("Principal")):
                continue
            if "NotAction" in statement:
                lists = not _matches_list(statement.get("NotAction"))
            else:
                lists = _matches_list(statement.get("Action"))
            if lists:
                report(
                    f"Statement[{index}] allows s3:ListBucket to every principal ('*'). Fix: "
                    "remove the statement, or grant s3:GetObject only."
                )


def _anyone(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, Mapping):
        return any("*" in _words(v) for v in principal.values())
    return "*" in _words(principal)


def _matches_list(actions: Any) -> bool:
    return any(fnmatch.fnmatchcase("s3:listbucket", a.lower()) for a in _words(actions))


def validate_resource_secrets(args, report) -> None:
    """What the engine lets a policy see of secrets: credential outputs marked secret, a
    remote command's stdin marked secret, no credential on a command line or in its
    environment (sent with SSH setenv and kept in plain text in the state)."""
    marked = {_norm(n) for n in (getattr(args.opts, "additional_secret_outputs", None) or [])}
    credentials = CREDENTIAL_OUTPUTS.get(args.resource_type, ())
    missing = [name for name in credentials if _norm(name) not in marked]
    if missing:
        report(
            f"{args.name}: output(s) {', '.join(missing)} are not marked secret "
            "(additional_secret_outputs): they would be stored and shown in plain text."
        )
    if args.resource_type != REMOTE_COMMAND:
        return
    if _has(args.props, "stdin") and "stdin" not in marked:
        report(
            f"{args.name}: stdin carries the step's secrets but is not in "
            "additional_secret_outputs=['stdin']."
        )
    for field in ("create", "update", "delete"):
        text = _known(args.props, field, "")
        if isinstance(text, str) and SECRET_ASSIGNMENT.search(text):
            report(
                f"{args.name}: the {field} command line carries a credential; a failed command "
                "prints its whole command line. Fix: pass secrets on stdin."
            )
    environment = _known(args.props, "environment", {}) or {}
    for name in list(iter(environment)):
        if SECRET_NAME.search(str(name)):
            report(
                f"{args.name}: environment variable {name} looks like a credential; the "
                "environment is sent with SSH setenv (refused without AcceptEnv) and kept "
                "in plain text in the state. Fix: pass it on stdin."
            )


def _norm(name: str) -> str:
    return str(name).replace("_", "").lower()


def _holds_data(resource_type: str, props) -> str | None:
    """What the resource is when it holds data the stack must keep, else None."""
    if resource_type == DROPLET:
        return "database droplet" if _is_database_droplet(props, _known) else None
    kinds = {VOLUME: "volume", DATABASE_REPLICA: "read-only node", SPACES_BUCKET: "Spaces bucket"}
    if resource_type == DATABASE_CLUSTER:
        return "database cluster"
    return kinds.get(resource_type)


def _is_database_droplet(props, read=_get) -> bool:
    """By its name, else by its tags (other resources' outputs, so read only when needed: with
    `_get` a tag not known yet makes the SDK say the rule cannot judge before `up`)."""
    name = str(_known(props, "name", "") or "")
    if "mastodon-db" in name:
        return True
    tags = _words(read(props, "tags", []))
    return any("mastodon-db" in t or DB_DROPLET_TAG.match(t) for t in tags)


def validate_data_kept(args, report) -> None:
    """What holds data is `protect`ed, so the engine stops a run that would replace or delete it
    (with the resource and the reason); a database droplet ignores the inputs that would replace
    it; a connection pool is deleted before its replacement is made (no name collision). The
    pack's `allowDataLoss` lets one run replace or remove unprotected data on purpose."""
    opts = args.opts
    what = _holds_data(args.resource_type, args.props)
    allowed = bool((args.get_config() or {}).get(ALLOW_DATA_LOSS))
    if what and not getattr(opts, "protect", False) and not allowed:
        report(
            f"the {what} {args.name} is not protected: a change that replaces it, or its "
            "removal, would destroy its data. Fix: pulumi config rm mastodon-data:protectData "
            "(on by default). To replace or remove it on purpose, for one run: pulumi config "
            "set mastodon-data:protectData false and pass a --policy-pack-config with "
            f'{{"data-kept": {{"{ALLOW_DATA_LOSS}": true}}}} (docs/operators/lifecycle.md)'
        )
    if what == "database droplet":
        ignored = set(getattr(opts, "ignore_changes", None) or [])
        missing = [k for k in DROPLET_CREATE_ONLY if k not in ignored and _snake(k) not in ignored]
        if missing:
            report(
                f"the database droplet {args.name} does not ignore {', '.join(missing)}: a change "
                "of one would replace the droplet and the database on its disk. Fix: "
                f"ignore_changes={list(DROPLET_CREATE_ONLY)} (keys: mastodon-data:authorizedKeys)"
            )
    if args.resource_type == DATABASE_POOL and not getattr(opts, "delete_before_replace", False):
        report(
            f"the connection pool {args.name} would be replaced create-first: DigitalOcean "
            "refuses a second pool of the same name. Fix: delete_before_replace=True"
        )


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def validate_database_droplets_monitored(args, report) -> None:
    """Droplets that hold the databases (name with mastodon-db, or the role tags) have
    DigitalOcean monitoring on (the metrics agent: disk, memory, load alerts)."""
    if args.resource_type != DROPLET:
        return
    name = str(_known(args.props, "name", "") or "")
    if _is_database_droplet(args.props) and _known(args.props, "monitoring", False) is not True:
        report(
            f"database droplet {name or args.name} has monitoring off. Fix: monitoring=True "
            "(DigitalOcean's metrics agent; alerts on disk, memory and load)."
        )


# ---------------------------------------------------------------------------------------------
# Stack rules


def validate_databases_have_firewall(args, report) -> None:
    """Every managed PostgreSQL/Valkey/Redis cluster and read-only node has a database firewall
    with at least one trusted source (without one, DigitalOcean lets every address connect)."""
    firewalls = [r for r in args.resources if r.resource_type == DATABASE_FIREWALL]
    for resource in args.resources:
        what = _managed_database(resource.resource_type, resource.props)
        if what is None:
            continue
        guarding = [f for f in firewalls if _targets(f, resource)]
        if not guarding:
            report(
                f"the {what} {resource.name} has no DatabaseFirewall: every address may connect "
                "(with the password). Fix: DatabaseFirewall(cluster_id=<its id>, rules=[...]).",
                resource.urn,
            )
        elif not any(_known(f.props, "rules", ["unknown"]) for f in guarding):
            report(
                f"the DatabaseFirewall of the {what} {resource.name} has no rules, which "
                "DigitalOcean reads as 'everyone'. Fix: trust the app's tag, droplets or range.",
                resource.urn,
            )


def _targets(firewall, resource) -> bool:
    """Whether `firewall` guards `resource`: through the property that fed its clusterId
    (known in a preview), or by the id DigitalOcean gave the cluster."""
    deps = (getattr(firewall, "property_dependencies", None) or {}).get("clusterId") or []
    if any(d is resource or getattr(d, "urn", None) == resource.urn for d in deps):
        return True
    if resource.resource_type == DATABASE_REPLICA:
        identity = _known(resource.props, "uuid")
    else:
        identity = str(_known(resource.props, "clusterUrn", "") or "").rpartition(":")[2]
    cluster_id = _known(firewall.props, "clusterId")
    return bool(identity) and cluster_id == identity


def validate_secret_outputs(args, report) -> None:
    """Every password-like stack output (name with pass/secret/token/key, or a map holding
    such a key) and each output named in `alwaysSecretOutputs` is a Pulumi secret."""
    stack = next((r for r in args.resources if r.resource_type == STACK), None)
    if stack is None:
        return
    if not any(_has_secret_mark(r.props) for r in args.resources):
        args.not_applicable(NOT_VISIBLE)
        return
    always = set(_config_list(args, "alwaysSecretOutputs", DEFAULT_ALWAYS_SECRET))
    for name in sorted(list(iter(stack.props))):
        try:
            value = stack.props[name]
        except UnknownValueError:
            continue  # judged by `up`, when the value is known
        if is_secret(value) or _empty(value):
            continue
        if name in always or SECRET_NAME.search(name):
            report(
                f"stack output {name} is not a secret: `pulumi stack output` shows it in plain "
                f"text and it is stored unencrypted. Fix: pulumi.export({name!r}, "
                "pulumi.Output.secret(...)).",
                stack.urn,
            )
            continue
        plain = _plain_credentials(value, name)
        if plain:
            report(
                f"stack output {name} holds credentials in plain text ({', '.join(plain)}). "
                f"Fix: export it with pulumi.Output.secret(...).",
                stack.urn,
            )


# ---------------------------------------------------------------------------------------------
# The policies, as the pack registers them (building them starts nothing).


def policies() -> list:
    cidr_list = {"type": "array", "items": {"type": "string"}}
    return [
        ResourceValidationPolicy(
            name="no-public-database-ports",
            description="No firewall opens 5432, 6432, 25060 or 25061 to 0.0.0.0/0 or ::/0, and "
            "no database firewall trusts them.",
            validate=validate_no_public_database_ports,
        ),
        ResourceValidationPolicy(
            name="ssh-only-from-admin-cidrs",
            description="SSH (port 22) only from the listed admin CIDRs, never from everyone.",
            validate=validate_ssh_only_from_admin_cidrs,
            config_schema=PolicyConfigSchema(
                properties={"allowedCidrs": {**cidr_list, "default": []}}
            ),
        ),
        ResourceValidationPolicy(
            name="databases-in-vpc",
            description="Managed PostgreSQL/Valkey/Redis clusters and read-only nodes are in "
            "the stack's VPC.",
            validate=validate_databases_in_vpc,
        ),
        StackValidationPolicy(
            name="databases-have-firewall",
            description="Every managed database cluster and read-only node has a database "
            "firewall with trusted sources.",
            validate=validate_databases_have_firewall,
        ),
        ResourceValidationPolicy(
            name="spaces-not-listable",
            description="Spaces buckets are not publicly listable (private ACL, no bucket "
            "policy granting s3:ListBucket to '*').",
            validate=validate_spaces_not_listable,
        ),
        ResourceValidationPolicy(
            name="secrets-stay-secret",
            description="Credential outputs and remote-command stdin are marked secret; no "
            "credential on a command line or in a command's environment.",
            validate=validate_resource_secrets,
        ),
        StackValidationPolicy(
            name="secret-outputs",
            description="Every password-like stack output (and mastodon_env) is a Pulumi secret.",
            validate=validate_secret_outputs,
            config_schema=PolicyConfigSchema(
                properties={
                    "alwaysSecretOutputs": {**cidr_list, "default": list(DEFAULT_ALWAYS_SECRET)}
                }
            ),
        ),
        ResourceValidationPolicy(
            name="data-kept",
            description="What holds data (database droplets, volumes, database clusters, "
            "read-only nodes, Spaces buckets) is protected, so no run replaces or deletes it "
            "unless the run allows it; database droplets ignore create-only inputs; pools are "
            "replaced delete-first.",
            validate=validate_data_kept,
            config_schema=PolicyConfigSchema(
                properties={ALLOW_DATA_LOSS: {"type": "boolean", "default": False}}
            ),
        ),
        ResourceValidationPolicy(
            name="database-droplets-monitored",
            description="Droplets holding the databases have DigitalOcean monitoring on.",
            validate=validate_database_droplets_monitored,
        ),
    ]
