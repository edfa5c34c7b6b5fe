"""The policy pack's rules (policy/: exposure.py, secret_rules.py, data_rules.py), each on a
passing and a violating resource, without the CLI: fake argument bags with the attributes the
validators read (`resource_type`, `props` in camelCase as the engine sends them, `name`, `urn`,
`opts.additional_secret_outputs`, `get_config()`, `not_applicable()`; stack rules get real
`PolicyResource`s). Then the real program on Pulumi's mocks, in every mode, must pass every
rule."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import data_rules
import exposure
import pulumi
import pytest
import reading
import rules
import secret_rules
from program_harness import run_program
from pulumi_policy import (
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationPolicy,
    Secret,
    StackValidationPolicy,
)
from pulumi_policy.policy import _NotApplicableError
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from tests import fixtures

SECRET_WIRE = {secret_rules.SECRET_SIG_KEY: secret_rules.SECRET_SIG}


class Args(SimpleNamespace):
    """What a ResourceValidationArgs / StackValidationArgs offers the validators."""

    def get_config(self):
        return getattr(self, "config", {})

    def not_applicable(self, reason=None):
        raise _NotApplicableError(reason)


def resource_args(typ, props, name="r", secret_outputs=(), config=None):
    return Args(
        resource_type=typ,
        props=unknown_checking_proxy(props),  # what the SDK hands over: unknowns raise
        name=name,
        urn=f"urn:pulumi:unit::mastodon-data::{typ}::{name}",
        opts=SimpleNamespace(additional_secret_outputs=list(secret_outputs)),
        config=config or {},
    )


def resource(typ, name, props, deps=None, secret_outputs=()):
    opts = PolicyResourceOptions(False, [], None, [], None, list(secret_outputs))
    return PolicyResource(
        typ,
        unknown_checking_proxy(props),
        f"urn:pulumi:unit::mastodon-data::{typ}::{name}",
        name,
        opts,
        None,
        None,
        [],
        deps or {},
    )


def violations(validate, args) -> list[str]:
    found: list[str] = []
    validate(args, lambda message, urn=None: found.append(message))
    return found


def firewall(*rules_):
    return {"name": "fw", "inboundRules": list(rules_)}


def tcp(port, **sources):
    return {"protocol": "tcp", "portRange": port, **sources}


# --- no-public-database-ports ----------------------------------------------------------------


def test_private_database_port_passes():
    args = resource_args(
        reading.FIREWALL,
        firewall(
            tcp("5432", sourceAddresses=["10.118.0.0/20"]),
            tcp("5432", sourceTags=["mastodon-data-dev-replica"]),
            tcp("443", sourceAddresses=["0.0.0.0/0", "::/0"]),  # not a database port
        ),
    )
    assert violations(exposure.validate_no_public_database_ports, args) == []


@pytest.mark.parametrize(
    ("port_range", "source"),
    [
        ("5432", "0.0.0.0/0"),
        ("6432", "::/0"),
        ("25060", "0.0.0.0/0"),
        ("25061", "::/0"),
        ("5000-6000", "0.0.0.0/0"),  # a range that covers 5432
        ("all", "0.0.0.0/0"),
        ("1-65535", "::/0"),
    ],
)
def test_database_port_open_to_everyone_is_refused(port_range, source):
    args = resource_args(reading.FIREWALL, firewall(tcp(port_range, sourceAddresses=[source])))
    (message,) = violations(exposure.validate_no_public_database_ports, args)
    assert source in message and "inboundRules[0]" in message


def test_database_firewall_trusting_everyone_is_refused_and_a_tag_passes():
    good = resource_args(
        reading.DATABASE_FIREWALL,
        {"clusterId": "c", "rules": [{"type": "tag", "value": "mastodon-app"}]},
    )
    assert violations(exposure.validate_no_public_database_ports, good) == []
    bad = resource_args(
        reading.DATABASE_FIREWALL,
        {"clusterId": "c", "rules": [{"type": "ip_addr", "value": "0.0.0.0/0"}]},
    )
    (message,) = violations(exposure.validate_no_public_database_ports, bad)
    assert "0.0.0.0/0" in message


# --- ssh-only-from-admin-cidrs ---------------------------------------------------------------


def test_ssh_from_a_listed_cidr_passes():
    args = resource_args(
        reading.FIREWALL,
        firewall(tcp("22", sourceAddresses=["198.51.100.7/32"])),
        config={"allowedCidrs": ["198.51.100.0/24"]},
    )
    assert violations(exposure.validate_ssh_only_from_admin_cidrs, args) == []


def test_ssh_from_everyone_is_refused_even_without_a_list():
    args = resource_args(reading.FIREWALL, firewall(tcp("22", sourceAddresses=["0.0.0.0/0"])))
    (message,) = violations(exposure.validate_ssh_only_from_admin_cidrs, args)
    assert "port 22" in message and "0.0.0.0/0" in message


def test_ssh_from_an_unlisted_cidr_is_refused():
    args = resource_args(
        reading.FIREWALL,
        firewall(tcp("1-1024", sourceAddresses=["203.0.113.9/32", "198.51.100.7/32"])),
        config={"allowedCidrs": ["198.51.100.0/24"]},
    )
    (message,) = violations(exposure.validate_ssh_only_from_admin_cidrs, args)
    assert "203.0.113.9/32" in message and "allowedCidrs" in message


# --- databases-in-vpc ------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["pg", "valkey", "redis"])
def test_cluster_in_a_vpc_passes_and_outside_is_refused(engine):
    inside = {"engine": engine, "privateNetworkUuid": "vpc-1"}
    assert (
        violations(
            exposure.validate_databases_in_vpc, resource_args(reading.DATABASE_CLUSTER, inside)
        )
        == []
    )
    outside = resource_args(reading.DATABASE_CLUSTER, {"engine": engine}, name="pg")
    (message,) = violations(exposure.validate_databases_in_vpc, outside)
    assert "privateNetworkUuid" in message and engine in message


def test_vpc_not_known_during_a_preview_counts_as_set():
    props = {"engine": "pg", "privateNetworkUuid": UNKNOWN_STRING_VALUE}
    args = resource_args(reading.DATABASE_CLUSTER, props)
    assert violations(exposure.validate_databases_in_vpc, args) == []


def test_read_only_node_outside_a_vpc_is_refused():
    args = resource_args(reading.DATABASE_REPLICA, {"clusterId": "c", "name": "ro"})
    assert len(violations(exposure.validate_databases_in_vpc, args)) == 1


# --- databases-have-firewall (stack) ---------------------------------------------------------


def test_cluster_with_a_firewall_passes():
    cluster = resource(reading.DATABASE_CLUSTER, "pg", {"engine": "pg"})
    guard = resource(
        reading.DATABASE_FIREWALL,
        "pg-fw",
        {"clusterId": "uuid-1", "rules": [{"type": "tag", "value": "app"}]},
        deps={"clusterId": [cluster]},
    )
    # A read-only node matched by its uuid (no property dependency recorded).
    replica = resource(reading.DATABASE_REPLICA, "ro", {"uuid": "uuid-ro"})
    replica_guard = resource(
        reading.DATABASE_FIREWALL, "ro-fw", {"clusterId": "uuid-ro", "rules": [{"type": "tag"}]}
    )
    args = Args(resources=[cluster, guard, replica, replica_guard])
    assert violations(exposure.validate_databases_have_firewall, args) == []


def test_cluster_without_a_firewall_or_with_an_empty_one_is_refused():
    valkey = resource(reading.DATABASE_CLUSTER, "valkey", {"engine": "valkey"})
    pg = resource(reading.DATABASE_CLUSTER, "pg", {"engine": "pg", "clusterUrn": "do:dbaas:u-2"})
    empty = resource(reading.DATABASE_FIREWALL, "pg-fw", {"clusterId": "u-2", "rules": []})
    found = violations(
        exposure.validate_databases_have_firewall, Args(resources=[valkey, pg, empty])
    )
    assert len(found) == 2
    assert "valkey cluster valkey has no DatabaseFirewall" in found[0]
    assert "no rules" in found[1]


# --- spaces-not-listable ---------------------------------------------------------------------


def test_private_bucket_passes_and_public_read_is_refused():
    private = resource_args(reading.SPACES_BUCKET, {"name": "media", "acl": "private"})
    assert violations(exposure.validate_spaces_not_listable, private) == []
    default = resource_args(reading.SPACES_BUCKET, {"name": "media"})  # DigitalOcean: private
    assert violations(exposure.validate_spaces_not_listable, default) == []
    public = resource_args(reading.SPACES_BUCKET, {"name": "media", "acl": "public-read"})
    (message,) = violations(exposure.validate_spaces_not_listable, public)
    assert "public-read" in message


def bucket_policy(*statements):
    document = {"Version": "2012-10-17", "Statement": list(statements)}
    return resource_args(
        reading.SPACES_BUCKET_POLICY, {"bucket": "media", "policy": json.dumps(document)}
    )


def test_bucket_policy_granting_objects_passes():
    args = bucket_policy(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:..."},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:ListBucket", "Resource": "arn:..."},
        {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::1:user/ops"]}, "Action": "s3:*"},
    )
    assert violations(exposure.validate_spaces_not_listable, args) == []


@pytest.mark.parametrize(
    "statement",
    [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket"},
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["s3:GetObject", "s3:List*"]},
        {"Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": "s3:*"},
        {"Effect": "Allow", "Principal": "*", "NotAction": "s3:DeleteObject"},
    ],
)
def test_bucket_policy_letting_everyone_list_is_refused(statement):
    (message,) = violations(exposure.validate_spaces_not_listable, bucket_policy(statement))
    assert "s3:ListBucket" in message


# --- secrets-stay-secret (resources) ---------------------------------------------------------


def test_credential_outputs_marked_secret_pass_and_unmarked_are_refused():
    marked = resource_args(
        reading.DATABASE_USER, {"clusterId": "c", "name": "mastodon"}, secret_outputs=["password"]
    )
    assert violations(secret_rules.validate_resource_secrets, marked) == []
    bare = resource_args(reading.SPACES_KEY, {"name": "media"}, name="media-key")
    (message,) = violations(secret_rules.validate_resource_secrets, bare)
    assert "secretKey" in message


def command(**props):
    base = {"connection": {"host": "192.0.2.1"}, "create": "python3 -c 'launcher'"}
    return resource_args(reading.REMOTE_COMMAND, base | props, name="replication-primary")


def test_command_with_secret_stdin_passes():
    args = command(stdin='{"params": {}}')
    args.opts.additional_secret_outputs = ["stdin"]
    assert violations(secret_rules.validate_resource_secrets, args) == []


@pytest.mark.parametrize(
    ("props", "needle"),
    [
        ({"stdin": "{}"}, "additional_secret_outputs"),
        ({"create": "PGPASSWORD=hunter2hunter2 psql -h db"}, "command line"),
        ({"update": "mysql --password=hunter2 -e 'select 1'"}, "command line"),
        ({"environment": {"REPLICATION_PASSWORD": "x"}}, "REPLICATION_PASSWORD"),
    ],
)
def test_command_leaking_a_secret_is_refused(props, needle):
    (message,) = violations(secret_rules.validate_resource_secrets, command(**props))
    assert needle in message


def test_command_line_reading_a_password_from_a_variable_passes():
    args = command(create='PGPASSWORD="$(cat /root/.pw)" psql', environment={"LANG": "C"})
    assert violations(secret_rules.validate_resource_secrets, args) == []


# --- secret-outputs (stack) ------------------------------------------------------------------


def stack(outputs):
    return resource(reading.STACK, "mastodon-data-unit", outputs)


def test_secret_outputs_pass():
    outputs = {
        "mastodon_env": Secret({"DB_PASS": "pw", "DB_HOST": "10.0.0.1"}),
        "migration_env": SECRET_WIRE | {"value": {"DB_HOST": "10.0.0.1"}},
        "admin_password": Secret("pw"),
        "primary": {"name": "db1", "private_address": "10.0.0.1"},
        "redis": {"host": "h", "password": Secret("pw")},  # a secret inside a plain map
    }
    args = Args(resources=[stack(outputs)])
    assert violations(secret_rules.validate_secret_outputs, args) == []


def test_plain_password_like_outputs_are_refused():
    outputs = {
        "mastodon_env": {"DB_PASS": "pw"},
        "migration_env": {"DB_HOST": "10.0.0.1"},
        "api_token": "t",
        "spaces_secret_key": "k",
        "media": {"bucket": "b", "access": {"AWS_SECRET_ACCESS_KEY": "k"}},
        "postgres_ca_cert": "-----BEGIN CERTIFICATE-----",  # not a credential
        "vpc_id": "vpc-1",
        "keep_me_secret": Secret("x"),
    }
    found = violations(secret_rules.validate_secret_outputs, Args(resources=[stack(outputs)]))
    named = sorted(m.split()[2] for m in found)
    # migration_env carries no credential: plain is right (the program exports it so).
    assert named == ["api_token", "mastodon_env", "media", "spaces_secret_key"]
    assert "media.access.AWS_SECRET_ACCESS_KEY" in " ".join(found)


def test_always_secret_outputs_come_from_the_pack_config():
    outputs = {"mastodon_env": Secret({}), "migration_env": {"DB_HOST": "10.0.0.1"}}
    args = Args(resources=[stack(outputs)], config={"alwaysSecretOutputs": ["mastodon_env"]})
    assert violations(secret_rules.validate_secret_outputs, args) == []


def test_secret_outputs_are_not_applicable_when_the_sdk_hides_secretness():
    """pulumi-policy's AnalyzeStack deserializes without the secret mark: plain values only."""
    args = Args(resources=[stack({"mastodon_env": {"DB_PASS": "pw"}})])
    with pytest.raises(_NotApplicableError) as caught:
        violations(secret_rules.validate_secret_outputs, args)
    assert "AnalyzeStack" in caught.value.reason


# --- database-droplets-monitored -------------------------------------------------------------


def droplet(**props):
    return resource_args(reading.DROPLET, {"image": "ubuntu-24-04-x64", **props}, name="db-primary")


def test_monitored_database_droplet_passes_and_unmonitored_is_refused():
    good = droplet(name="mastodon-db-dev-primary", monitoring=True)
    assert violations(data_rules.validate_database_droplets_monitored, good) == []
    bad = droplet(name="mastodon-db-dev-primary", monitoring=False)
    (message,) = violations(data_rules.validate_database_droplets_monitored, bad)
    assert "monitoring" in message


def test_database_droplet_found_by_tag_and_other_droplets_left_alone():
    tagged = droplet(name="pg-1", tags=["mastodon-data-prod-replica"])
    assert len(violations(data_rules.validate_database_droplets_monitored, tagged)) == 1
    web = droplet(name="mastodon-web-1", tags=["mastodon-app"])
    assert violations(data_rules.validate_database_droplets_monitored, web) == []


def test_droplet_tags_unknown_in_a_preview_are_not_read_when_the_name_decides():
    args = droplet(name="mastodon-db-dev-primary", monitoring=True, tags=UNKNOWN_STRING_VALUE)
    assert violations(data_rules.validate_database_droplets_monitored, args) == []


def kept(typ, props, config=None, **opts):
    args = resource_args(typ, props, name="it", config=config)
    args.opts = SimpleNamespace(**{"protect": False, "ignore_changes": [],
                                   "delete_before_replace": False, **opts})  # fmt: skip
    return violations(data_rules.validate_data_kept, args)


DB_DROPLET = {"name": "mastodon-db-prod-0", "tags": ["mastodon-data-prod-db"]}
CREATE_ONLY = ["sshKeys", "image", "userData"]


@pytest.mark.parametrize(
    ("typ", "props", "what"),
    [
        (reading.DROPLET, DB_DROPLET, "database droplet"),
        (reading.VOLUME, {"name": "pg"}, "volume"),
        (reading.DATABASE_CLUSTER, {"engine": "pg"}, "database cluster"),
        (reading.DATABASE_CLUSTER, {"engine": "valkey"}, "database cluster"),
        (reading.DATABASE_REPLICA, {"name": "ro"}, "read-only node"),
        (reading.SPACES_BUCKET, {"name": "media"}, "Spaces bucket"),
    ],
)
def test_data_kept_refuses_unprotected_data_unless_the_run_allows_it(typ, props, what):
    ignore = CREATE_ONLY if typ == reading.DROPLET else []
    assert kept(typ, props, protect=True, ignore_changes=ignore) == []
    (message,) = kept(typ, props, ignore_changes=ignore)
    assert message.startswith(f"the {what} it is not protected: a change that replaces it, or ")
    assert "pulumi config rm mastodon-data:protectData" in message
    assert '{"data-kept": {"allowDataLoss": true}}' in message
    assert kept(typ, props, config={"allowDataLoss": True}, ignore_changes=ignore) == []


def test_data_kept_wants_database_droplets_to_ignore_create_only_inputs():
    (message,) = kept(reading.DROPLET, DB_DROPLET, protect=True, ignore_changes=["image"])
    assert message.startswith("the database droplet it does not ignore sshKeys, userData: ")
    snake = ["ssh_keys", "image", "user_data"]  # as a Python program may name them
    assert kept(reading.DROPLET, DB_DROPLET, protect=True, ignore_changes=snake) == []
    web = {"name": "mastodon-web-1", "tags": ["mastodon-app"]}
    assert kept(reading.DROPLET, web) == []  # not ours to judge


def test_data_kept_wants_the_pool_replaced_delete_first():
    (message,) = kept(reading.DATABASE_POOL, {"name": "mastodon_pool"})
    assert "refuses a second pool of the same name" in message
    assert kept(reading.DATABASE_POOL, {"name": "p"}, delete_before_replace=True) == []
    assert kept(reading.DATABASE_USER, {"name": "mastodon"}) == []  # holds no data of its own


# --- the pack as registered ------------------------------------------------------------------


def test_policies_are_unique_wired_and_configurable():
    policies = rules.policies()
    names = [p.name for p in policies]
    assert len(set(names)) == len(names) == 9
    by_name = {p.name: p for p in policies}
    assert isinstance(by_name["databases-have-firewall"], StackValidationPolicy)
    assert isinstance(by_name["secret-outputs"], StackValidationPolicy)
    assert by_name["ssh-only-from-admin-cidrs"].config_schema.properties["allowedCidrs"]
    # The registered policy calls the rule (what the analyzer server does).
    found = []
    bad = resource_args(reading.FIREWALL, firewall(tcp("5432", sourceAddresses=["::/0"])))
    policy = by_name["no-public-database-ports"]
    assert isinstance(policy, ResourceValidationPolicy)
    policy.validate(bad, lambda message, urn=None: found.append(message))
    assert found


def test_pack_config_names_existing_policies_and_properties():
    config = json.loads((Path(rules.__file__).parent / "config.json").read_text())
    by_name = {p.name: p for p in rules.policies()}
    for policy_name, values in config.items():
        schema = by_name[policy_name].config_schema
        assert schema is not None and set(values) <= set(schema.properties)


# --- the real program on mocks passes every rule ---------------------------------------------

DROPLETS = {**fixtures.DROPLETS, "replicaCount": 2}
HOSTS = fixtures.HOSTS
MANAGED = {  # managed PostgreSQL with a read-only node, Spaces and managed Valkey
    **fixtures.MANAGED,
    "appCidrs": ["10.118.0.0/20"],
    "managedReplica": True,
    **fixtures.SPACES,
    "redisMode": "managed",
}
RESOURCE_RULES = [
    exposure.validate_no_public_database_ports,
    exposure.validate_ssh_only_from_admin_cidrs,
    exposure.validate_databases_in_vpc,
    exposure.validate_spaces_not_listable,
    secret_rules.validate_resource_secrets,
    data_rules.validate_database_droplets_monitored,
]


@pytest.fixture
def secret_options(monkeypatch):
    """additional_secret_outputs per (type, name) as the program registers them (the mocks do not
    pass resource options on)."""
    seen: dict[tuple[str, str], list[str]] = {}
    original = pulumi.Resource.__init__

    def record(self, t, name, custom=False, props=None, opts=None, *args, **kwargs):
        if opts is not None and opts.additional_secret_outputs:
            seen[(t, name)] = list(opts.additional_secret_outputs)
        return original(self, t, name, custom, props, opts, *args, **kwargs)

    monkeypatch.setattr(pulumi.Resource, "__init__", record)
    return seen


@pytest.mark.parametrize(
    ("config", "secrets"), [(DROPLETS, None), (HOSTS, None), (MANAGED, {})], ids=str
)
def test_the_program_passes_every_rule_on_mocks(secret_options, config, secrets):
    run = run_program(config, secrets)
    allowed = {"allowedCidrs": ["198.51.100.0/24"]}
    for registered in run.resources:
        if registered.typ.startswith("mastodon-data:"):
            continue  # components
        args = resource_args(
            registered.typ,
            registered.inputs,
            registered.name,
            secret_options.get((registered.typ, registered.name), ()),
            allowed,
        )
        for validate in RESOURCE_RULES:
            assert violations(validate, args) == [], (validate.__name__, registered.name)
        options = run.options.get(registered.name, pulumi.ResourceOptions())
        args.opts = options  # protect, ignore_changes, delete_before_replace as registered
        assert violations(data_rules.validate_data_kept, args) == [], registered.name
    # Stack rules: the resources with the dependency the engine would record (a firewall's
    # clusterId came from the cluster; mock ids are "<name>-id", uuids "<name>-uuid").
    by_id = {}
    for registered in run.resources:
        by_id[f"{registered.name}-id"] = by_id[f"{registered.name}-uuid"] = registered
    stack_resources = {r.name: resource(r.typ, r.name, r.inputs) for r in run.resources}
    for registered in run.resources:
        if registered.typ == reading.DATABASE_FIREWALL:
            source = by_id[registered.inputs["clusterId"]]
            stack_resources[registered.name].property_dependencies["clusterId"] = [
                stack_resources[source.name]
            ]
    args = Args(resources=list(stack_resources.values()))
    assert violations(exposure.validate_databases_have_firewall, args) == []
    if config is MANAGED:
        assert len([r for r in run.resources if r.typ == reading.DATABASE_FIREWALL]) == 3


@pytest.mark.parametrize(
    ("config", "secrets"), [(DROPLETS, None), (HOSTS, None), (MANAGED, {})], ids=str
)
def test_the_programs_outputs_on_mocks_are_secret_where_the_rule_says(config, secrets):
    """Where the engine cannot show a policy secretness, the mocks can: the same rule over the
    program's exports, secret ones marked as the SDK would. migration_env (host, port, database
    name, no credential) is exported plain in every mode and the rule agrees."""
    run = run_program(config, secrets)
    assert "mastodon_env" in run.secret_outputs
    outputs = {k: Secret(v) if k in run.secret_outputs else v for k, v in run.outputs.items()}
    found = violations(secret_rules.validate_secret_outputs, Args(resources=[stack(outputs)]))
    assert found == []
    assert "migration_env" not in run.secret_outputs
