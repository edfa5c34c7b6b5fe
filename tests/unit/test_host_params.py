"""Every plan the program and the commands build, held against the host scripts: each step sends
exactly the keys its script reads (found in the scripts' source: `params["key"]` and
`params.get("key")` in the functions its run reaches, in the files its step ships), its record's
values have the record's types, and a setting keeps its Pulumi.yaml name on the way (snake_case).
"""

from __future__ import annotations

import ast
import json
import re
import typing
from dataclasses import fields
from functools import cache

import pytest
import yaml
from program_harness import run_program

from mastodon_data import plan
from mastodon_data.config import parse_settings
from mastodon_data.config.hosts import HOST_ENTRY_KEYS
from mastodon_data.config.secrets import ALL_SECRET_KEYS
from mastodon_data.host_params import SCRIPTS, HostParams
from tests.fixtures import DROPLETS, HOST_KEY, ROOT, SECRETS, hosts_stack, with_host

ADMIN_KEY = HOST_KEY  # any OpenSSH public key line
BACKUPS = {"backups": True, "backupBucket": "mastodon-pg-backups"}
BACKUP_VALUES = {
    "backupCipherPassphrase": "backup-passphrase-0123456789",
    "backupSecretAccessKey": "host-key-secret-0123456789",
}
HOSTS = hosts_stack(count=4, replicas=2)
HOSTS_BACKUPS = {**HOSTS, **BACKUPS, "backupAccessKeyId": "KEYID123"}
MONITORING = {"monitoringSources": ["10.10.0.5/32"]}
MONITOR_SECRET = {"monitorPassword": "monitor-secret-0123456789"}
# The stacks the tests build, one option at a time (each with its secrets).
STACKS = {
    "droplets": (DROPLETS, SECRETS),
    "droplets-replicas-unpooled": ({**DROPLETS, "replicaCount": 2, "pgbouncer": False}, SECRETS),
    "droplets-backups-keys": (
        {**DROPLETS, **BACKUPS, "authorizedKeys": [ADMIN_KEY]},
        {**SECRETS, "backupCipherPassphrase": BACKUP_VALUES["backupCipherPassphrase"]},
    ),
    "hosts": (HOSTS, SECRETS),
    "hosts-volume-reseed-rotation-sudo": (
        {
            **with_host(HOSTS, 1, dataDevice="/dev/disk/by-id/scsi-0QEMU_disk-db2"),
            "reseedReplicas": ["db3"],
            "caRotation": "prepare",
            "sshUser": "deploy",
        },
        SECRETS,
    ),
    "hosts-backups-keys": (
        {**HOSTS_BACKUPS, "authorizedKeys": [ADMIN_KEY]},
        {**SECRETS, **BACKUP_VALUES},
    ),
    "droplets-replicas-monitoring": (
        {**DROPLETS, "replicaCount": 1, **MONITORING},
        {**SECRETS, **MONITOR_SECRET},
    ),
    "hosts-backups-unpooled-monitoring": (
        {**HOSTS_BACKUPS, "pgbouncer": False, **MONITORING},
        {**SECRETS, **BACKUP_VALUES, **MONITOR_SECRET},
    ),
}
# Fields the plan derives: no setting of that name (the others are snake_case settings).
DERIVED = {
    "port", "wal_senders", "replication_peers", "primary_address", "primary_port",
    "reseed", "primary_ca_cert", "replicas", "stanza", "pool_size",
    "backup_path", "action", "role", "type", "target_time", "overwrite",
    "monitor_user", "exporter_ports", "postgres_queries", "pool_peers", "read_db_name",
    "databases", "pause_wait", "catch_up_wait", "checkpoint", "replayed", "new_primary_address",
    "new_primary_cert", "exporter_builds",
}  # fmt: skip


def snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


# --- what a script reads ---------------------------------------------------------------------
def imported_names(tree: ast.Module, modules: set[str]) -> dict[str, str]:
    """name -> the shipped module it comes from (`from common import run`), and each module
    imported whole under its own name (`import repository`)."""
    names = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module in modules:
            names |= {alias.asname or alias.name: node.module for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name: a.name for a in node.names if a.name in modules}
    return names


def called(node: ast.AST, module: str, imports: dict[str, str], modules: set[str]):
    """The (module, function) pairs a function's body names: calls, and functions passed on."""
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            yield imports.get(child.id, module), child.id
        elif isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name):
            if child.value.id in modules:
                yield child.value.id, child.attr


def param_reads(node: ast.AST) -> tuple[set[str], set[str]]:
    """(keys read with params[...], keys read with params.get(...) or `in params`)."""
    required, optional = set(), set()
    for child in ast.walk(node):
        if (
            isinstance(child, ast.Subscript)
            and isinstance(child.value, ast.Name)
            and child.value.id == "params"
            and isinstance(child.slice, ast.Constant)
        ):
            required.add(child.slice.value)
        elif (
            isinstance(child, ast.Call)
            and isinstance(child.func, ast.Attribute)
            and child.func.attr == "get"
            and isinstance(child.func.value, ast.Name)
            and child.func.value.id == "params"
            and child.args
            and isinstance(child.args[0], ast.Constant)
        ):
            optional.add(child.args[0].value)
        elif isinstance(child, ast.Compare) and isinstance(child.left, ast.Constant):
            if any(isinstance(c, ast.Name) and c.id == "params" for c in child.comparators):
                optional.add(child.left.value)
    return required, optional


@cache
def keys_read(script: str) -> tuple[frozenset[str], frozenset[str]]:
    """(required, optional) parameter keys of the functions the script's run reaches, in the
    files its step ships."""
    trees = {n.removesuffix(".py"): ast.parse(s) for n, s in plan.script_files(script).items()}
    modules = set(trees)
    functions = {
        (module, node.name): (node, imported_names(tree, modules))
        for module, tree in trees.items()
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
    }
    wanted = [key for key in functions if key[0] == script]
    reached: set[tuple[str, str]] = set()
    while wanted:
        key = wanted.pop()
        if key in functions and key not in reached:
            reached.add(key)
            node, imports = functions[key]
            wanted += called(node, key[0], imports, modules)
    required, optional = set(), set()
    for key in reached:
        found = param_reads(functions[key][0])
        required |= found[0]
        optional |= found[1]
    return frozenset(required), frozenset(optional - required)


def test_the_reader_finds_what_a_script_reads():
    """The primary's reads through common.py (server_settings, app_hba_lines) and tls.py; the
    pooler ships common.py but never calls app_hba_lines."""
    required, optional = keys_read("primary")
    assert {"wal_senders", "postgres_allowed_sources", "certificate_days", "ca_rotation"} <= (
        required
    )
    assert optional == set()
    assert "postgres_allowed_sources" not in keys_read("pooler")[0]
    assert keys_read("volume") == ({"data_device"}, set())
    assert keys_read("promote") == ({"postgres_version", "port"}, set())


# --- every plan against every script ---------------------------------------------------------
@cache
def program_payloads(stack: str) -> list[tuple[str, str, dict]]:
    """(command, script, params with secrets) of every remote command the program makes."""
    run = run_program(*STACKS[stack])
    found = []
    for command in run.of_type("command:remote:Command"):
        if command.name.endswith("-staging"):  # the copies' directory (test_exporter_shipping)
            continue
        stdin = json.loads(command.inputs["stdin"])
        found.append((command.name, stdin["run"].removesuffix(".py"), stdin["params"]))
    return found


def operator_steps() -> list[plan.Step]:
    """The steps the commands run over ssh: promote, switchover, backup now and check,
    restore."""
    settings = parse_settings(HOSTS_BACKUPS, set(SECRETS) | set(BACKUP_VALUES))
    replication, backups, hosts = settings.replication, settings.backups, settings.hosts
    return [
        plan.promote_step(replication, hosts[1]),
        plan.switchover_step(replication, hosts[0], "pause", databases=("mastodon_production",)),
        plan.backup_now_step(replication, backups, hosts[0], "diff"),
        plan.backup_check_step(replication, backups, hosts[0]),
        plan.restore_step(replication, backups, hosts[3], "2026-11-23 18:04:05+00", True),
        plan.restore_step(replication, backups, hosts[3]),
    ]


def assert_sent_is_read(where: str, script: str, sent: set[str]) -> None:
    required, optional = keys_read(script)
    assert required, f"{script}: no parameter read found (has the reader lost its way?)"
    assert required - sent == set(), f"{where}: {script} reads keys not sent"
    assert sent - required - optional == set(), f"{where}: {script} never reads keys sent"


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_every_command_of_the_program_sends_what_its_script_reads(stack):
    payloads = program_payloads(stack)
    scripts = {script for _, script, _ in payloads}
    assert {"primary", "replica", "slots", "status"} <= scripts
    for name, script, params in payloads:
        assert_sent_is_read(f"{stack} {name}", script, set(params))


def test_the_stacks_cover_every_script_of_the_program():
    scripts = {script for stack in STACKS for _, script, _ in program_payloads(stack)}
    assert scripts == set(SCRIPTS) - {"promote", "switchover", "restore"}  # the commands' own
    assert {s.script for s in operator_steps()} == {"promote", "switchover", "backup", "restore"}


def test_every_step_of_the_commands_sends_what_its_script_reads():
    for step in operator_steps():
        sent = set(step.params) | set(step.secret_params)
        assert_sent_is_read(step.name, step.script, sent)


# --- typed records, one name per setting -----------------------------------------------------
def conforms(value: typing.Any, hint: typing.Any) -> bool:
    if hint is typing.Any:
        return True
    if typing.get_origin(hint) is tuple:
        return isinstance(value, tuple) and all(
            conforms(v, typing.get_args(hint)[0]) for v in value
        )
    if typing.get_origin(hint) is dict:
        key_hint, value_hint = typing.get_args(hint)
        return isinstance(value, dict) and all(
            conforms(k, key_hint) and conforms(v, value_hint) for k, v in value.items()
        )
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def plan_records() -> list[HostParams]:
    records = [step.record for step in operator_steps()]
    for config, secrets in STACKS.values():
        settings = parse_settings(config, set(secrets))
        if settings.hosts:  # droplets: the hosts come from the droplets (program tests above)
            steps = plan.steps(settings.replication, settings.hosts, backups=settings.backups)
            records += [step.record for step in steps]
        keys = settings.lifecycle.authorized_keys
        records += [s.record for s in plan.authorized_keys_steps(keys, settings.hosts)]
    return records


def test_every_record_holds_values_of_its_types():
    records = plan_records()
    assert {type(r).SCRIPT for r in records} == set(SCRIPTS)
    for record in records:
        hints = typing.get_type_hints(type(record))
        for f in fields(record):
            value = getattr(record, f.name)
            assert conforms(value, hints[f.name]), (type(record).__name__, f.name, value)


def test_a_setting_keeps_its_name_to_the_host():
    config = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    settings = {snake(key) for key in (*config, *HOST_ENTRY_KEYS)}
    for record in SCRIPTS.values():
        for f in fields(record):
            assert f.name in settings | DERIVED, (record.__name__, f.name)
        for param, secret in record.SECRETS.items():
            assert param == snake(secret) and secret in (*ALL_SECRET_KEYS, *config)
    assert snake("postgresVersion") == "postgres_version" in settings
