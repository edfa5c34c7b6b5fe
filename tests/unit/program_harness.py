"""Runs the real Pulumi program (__main__.py) on Pulumi mocks and collects what it registered
and exported. Mock inputs arrive in camelCase; a remote.Command's stdout is a canned report."""

from __future__ import annotations

import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path

import pulumi

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "mastodon-data"
SECRETS = {
    "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAtestkeymaterial\n"
    "-----END OPENSSH PRIVATE KEY-----\n",
    "replicationPassword": "replication-secret-0123456789",
    "dbPassword": "database-secret-0123456789",
}


CA_CERT = "-----BEGIN CERTIFICATE-----\nMIIBtestca\n-----END CERTIFICATE-----\n"
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's marker of a secret value


def unwrap(value):
    """Plain values from mock inputs, where secrets arrive wrapped."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            return unwrap(value["value"])
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict
    secret_inputs: set[str] = field(default_factory=set)  # top-level inputs marked secret


class Mocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.resources: list[Registered] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        wrapped = {k for k, v in args.inputs.items() if isinstance(v, dict) and SECRET_SIG in v}
        self.resources.append(Registered(args.typ, args.name, unwrap(dict(args.inputs)), wrapped))
        state = dict(args.inputs)
        if args.typ == "digitalocean:index/droplet:Droplet":
            # Addresses follow the name (registration order is not deterministic).
            n = 1 if args.name.endswith("primary") else 1 + int(args.name.rsplit("-", 1)[1])
            state |= {"ipv4Address": f"203.0.113.{n}", "ipv4AddressPrivate": f"10.118.0.{n + 1}"}
            return [str(1000 + n), state]
        if args.typ == "command:remote:Command":
            report = {"role": "status-of-" + args.name, "changed": []}
            if args.name.endswith("-primary"):
                report["ca_cert"] = CA_CERT
            state["stdout"] = json.dumps(report)
        return [f"{args.name}-id", state]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


@dataclass
class Run:
    resources: list[Registered]
    outputs: dict = field(default_factory=dict)

    def of_type(self, suffix: str) -> list[Registered]:
        return [r for r in self.resources if r.typ.endswith(suffix)]


def run_program(config: dict, secrets: dict | None = None) -> Run:
    """Runs __main__.py with `config` (keys without the project prefix) and the secrets."""
    secrets = SECRETS if secrets is None else secrets
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="unit", preview=False)
    values = {**config, **secrets}
    pulumi.runtime.set_all_config(
        {f"{PROJECT}:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()},
        [f"{PROJECT}:{k}" for k in secrets],
    )
    run = Run(mocks.resources)

    @pulumi.runtime.test
    def program():
        runpy.run_path(str(ROOT / "__main__.py"))
        exports = pulumi.runtime.get_root_resource().outputs
        return pulumi.Output.all(**exports).apply(run.outputs.update)

    program()
    return run
