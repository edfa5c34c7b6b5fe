"""Secrets stay secret: credential outputs and a remote command's stdin marked secret, no
credential on a command line or in a command's environment, password-like stack outputs
secret (where the engine lets a policy see the mark)."""

from __future__ import annotations

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
from reading import (
    DATABASE_CLUSTER,
    DATABASE_POOL,
    DATABASE_REPLICA,
    DATABASE_USER,
    REMOTE_COMMAND,
    SPACES_KEY,
    STACK,
    STRING_LIST,
    config_list,
    empty,
    has,
    known,
)

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
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # Pulumi's marker of a special value
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # ... that says "secret"
NOT_VISIBLE = (
    "the Python policy SDK (pulumi-policy 1.21.0) drops the secret mark of stack outputs in "
    "AnalyzeStack, so a stack policy cannot tell a secret output from a plain one; the "
    "program's outputs are checked on mocks by tests/unit/test_policy.py, and "
    "secrets-stay-secret checks the resources"
)


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
            if SECRET_NAME.search(str(key)) and not empty(item) and not is_secret(item):
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


def _norm(name: str) -> str:
    return str(name).replace("_", "").lower()


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
    if has(args.props, "stdin") and "stdin" not in marked:
        report(
            f"{args.name}: stdin carries the step's secrets but is not in "
            "additional_secret_outputs=['stdin']."
        )
    for field in ("create", "update", "delete"):
        text = known(args.props, field, "")
        if isinstance(text, str) and SECRET_ASSIGNMENT.search(text):
            report(
                f"{args.name}: the {field} command line carries a credential; a failed command "
                "prints its whole command line. Fix: pass secrets on stdin."
            )
    environment = known(args.props, "environment", {}) or {}
    for name in list(iter(environment)):
        if SECRET_NAME.search(str(name)):
            report(
                f"{args.name}: environment variable {name} looks like a credential; the "
                "environment is sent with SSH setenv (refused without AcceptEnv) and kept "
                "in plain text in the state. Fix: pass it on stdin."
            )


def validate_secret_outputs(args, report) -> None:
    """Every password-like stack output (name with pass/secret/token/key, or a map holding
    such a key) and each output named in `alwaysSecretOutputs` is a Pulumi secret."""
    stack = next((r for r in args.resources if r.resource_type == STACK), None)
    if stack is None:
        return
    if not any(_has_secret_mark(r.props) for r in args.resources):
        args.not_applicable(NOT_VISIBLE)
        return
    always = set(config_list(args, "alwaysSecretOutputs", DEFAULT_ALWAYS_SECRET))
    for name in sorted(list(iter(stack.props))):
        try:
            value = stack.props[name]
        except UnknownValueError:
            continue  # judged by `up`, when the value is known
        if is_secret(value) or empty(value):
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


def policies() -> list:
    return [
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
                    "alwaysSecretOutputs": {**STRING_LIST, "default": list(DEFAULT_ALWAYS_SECRET)}
                }
            ),
        ),
    ]
