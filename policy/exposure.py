"""Who may reach what: no database port open to every address, SSH only from the admins'
ranges, managed databases in the stack's VPC and behind a database firewall with trusted
sources, Spaces buckets nobody can list."""

from __future__ import annotations

import fnmatch
import ipaddress
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import PolicyConfigSchema, ResourceValidationPolicy, StackValidationPolicy
from reading import (
    DATABASE_CLUSTER,
    DATABASE_FIREWALL,
    DATABASE_REPLICA,
    FIREWALL,
    SPACES_BUCKET,
    SPACES_BUCKET_POLICY,
    STRING_LIST,
    config_list,
    get,
    has,
    known,
    words,
)

# PostgreSQL, pgBouncer, and DigitalOcean's managed PostgreSQL (direct and pool).
DATABASE_PORTS = (5432, 6432, 25060, 25061)
SSH_PORT = 22
DATABASE_ENGINES = ("pg", "valkey", "redis")


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


def _sources(rule: Mapping) -> list[str]:
    return words(get(rule, "sourceAddresses", []))


def validate_no_public_database_ports(args, report) -> None:
    """No cloud firewall opens a database port to every address, and no database firewall
    trusts every address."""
    if args.resource_type == FIREWALL:
        for index, rule in enumerate(get(args.props, "inboundRules", [])):
            if str(get(rule, "protocol", "tcp")).lower() == "icmp":
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
        for index, rule in enumerate(get(args.props, "rules", [])):
            if str(get(rule, "type", "")) == "ip_addr" and is_everyone(rule.get("value")):
                report(
                    f"rules[{index}] trusts ip_addr {rule.get('value')}: every address may "
                    "connect to the database. Fix: trust the app's tag, droplets or private "
                    "range (mastodon-data:appTag / appDropletIds / appCidrs)."
                )


def validate_ssh_only_from_admin_cidrs(args, report) -> None:
    """Port 22 only from the pack's `allowedCidrs` (when listed), and never from everyone."""
    if args.resource_type != FIREWALL:
        return
    allowed = config_list(args, "allowedCidrs", [])
    for index, rule in enumerate(get(args.props, "inboundRules", [])):
        if str(get(rule, "protocol", "tcp")).lower() == "icmp":
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
        engine = str(known(props, "engine", ""))
        return f"{engine} cluster" if engine in DATABASE_ENGINES else None
    if resource_type == DATABASE_REPLICA:
        return "read-only node"
    return None


def validate_databases_in_vpc(args, report) -> None:
    """Managed PostgreSQL/Valkey/Redis clusters and read-only nodes sit in a VPC."""
    what = _managed_database(args.resource_type, args.props)
    if what is None:
        return
    if not has(args.props, "privateNetworkUuid"):
        report(
            f"the {what} {args.name} has no privateNetworkUuid: it would sit in the region's "
            "default VPC, shared with every other droplet of the account. Fix: "
            "private_network_uuid=<the stack's VPC id>."
        )


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
        elif not any(known(f.props, "rules", ["unknown"]) for f in guarding):
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
        identity = known(resource.props, "uuid")
    else:
        identity = str(known(resource.props, "clusterUrn", "") or "").rpartition(":")[2]
    cluster_id = known(firewall.props, "clusterId")
    return bool(identity) and cluster_id == identity


def validate_spaces_not_listable(args, report) -> None:
    """Nobody lists a Spaces bucket: its ACL stays private and no bucket policy grants
    s3:ListBucket to everyone (Mastodon's objects are public-read one by one)."""
    if args.resource_type == SPACES_BUCKET:
        acl = str(get(args.props, "acl", "private")).lower()
        if acl != "private":
            report(
                f"bucket {args.name} has acl {acl!r}: anyone can list every object. Fix: "
                "acl='private' (Mastodon uploads each object public-read, S3_PERMISSION)."
            )
    elif args.resource_type == SPACES_BUCKET_POLICY:
        document = get(args.props, "policy", "")
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
        return any("*" in words(v) for v in principal.values())
    return "*" in words(principal)


def _matches_list(actions: Any) -> bool:
    return any(fnmatch.fnmatchcase("s3:listbucket", a.lower()) for a in words(actions))


def policies() -> list:
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
                properties={"allowedCidrs": {**STRING_LIST, "default": []}}
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
    ]
