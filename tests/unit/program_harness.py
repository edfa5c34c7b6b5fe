"""Runs the real Pulumi program (__main__.py) on Pulumi mocks and collects what it registered
and exported. Mock inputs arrive in camelCase; a remote.Command's stdout is a canned report; the
DigitalOcean resources answer with outputs shaped like the provider's (names from the SDK)."""

from __future__ import annotations

import json
import os
import re
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pulumi

from mastodon_data import cert_renewal
from mastodon_data.config import PROJECT
from tests.fixtures import SECRETS

ROOT = Path(__file__).resolve().parents[2]

CA_CERT = "-----BEGIN CERTIFICATE-----\nMIIBtestca\n-----END CERTIFICATE-----\n"
DO_CA_CERT = "-----BEGIN CERTIFICATE-----\nMIIBdigitaloceanca\n-----END CERTIFICATE-----\n"
# What DigitalOcean generates: the mocks hand these out as the resources' passwords and keys.
PG_USER_PASSWORD = "AVNS_pgUserPassword0123"
VALKEY_PASSWORD = "AVNS_valkeyPassword/4+5"  # URL-special characters on purpose
SPACES_ACCESS_KEY = "DO00MOCKACCESSKEY"
SPACES_SECRET_KEY = "mock/spaces+secret=key"
DO = "digitalocean:index/"
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
    """`made_with`: what every droplet's state holds beside its inputs (camelCase), as for
    droplets made earlier with other keys or another image (inputs the droplets ignore)."""

    def __init__(self, made_with: dict | None = None):
        self.resources: list[Registered] = []
        self.made_with = made_with or {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        wrapped = {k for k, v in args.inputs.items() if isinstance(v, dict) and SECRET_SIG in v}
        self.resources.append(Registered(args.typ, args.name, unwrap(dict(args.inputs)), wrapped))
        state = dict(args.inputs)
        if args.typ == "digitalocean:index/droplet:Droplet":
            # Addresses follow the position in the name, db-<n> (registration order is not
            # deterministic).
            n = 1 + int(args.name.rsplit("-", 1)[1])
            if re.search(r"-pg\d+-\d+$", state.get("name", "")):  # an upgrade's new tier
                n += 20
            state |= {"ipv4Address": f"203.0.113.{n}", "ipv4AddressPrivate": f"10.118.0.{n + 1}"}
            state |= self.made_with
            return [str(1000 + n), state]
        if args.typ.startswith(DO):
            outputs = digitalocean_outputs(args.typ.removeprefix(DO), args.name, state)
            if outputs is not None:
                return [outputs.pop("id", f"{args.name}-id"), state | outputs]
        if args.typ == "command:remote:Command":
            report = {"role": "status-of-" + args.name, "changed": []}
            if args.name.endswith("-primary"):
                report["ca_cert"] = CA_CERT
            state["stdout"] = json.dumps(report)
        return [f"{args.name}-id", state]

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == f"{DO}getDatabaseCa:getDatabaseCa":
            return {"certificate": DO_CA_CERT, "clusterId": args.args.get("clusterId")}
        return {}


def digitalocean_outputs(typ: str, name: str, inputs: dict) -> dict | None:
    """Computed outputs of a DigitalOcean resource as the provider reports them (camelCase)."""
    if typ == "loadBalancer:LoadBalancer":  # an upgrade's new tier's: .220
        return {"ip": f"10.118.0.2{2 if '-pg' in inputs['name'] else 0}0", "status": "active"}
    if typ == "databaseCluster:DatabaseCluster":
        valkey = inputs.get("engine") == "valkey"
        slug = inputs["name"]
        return {
            "host": f"{slug}-do-user-1.l.db.ondigitalocean.com",
            "privateHost": f"private-{slug}-do-user-1.l.db.ondigitalocean.com",
            "port": 25061 if valkey else 25060,
            "user": "default" if valkey else "doadmin",
            "password": VALKEY_PASSWORD if valkey else "AVNS_doadminPassword",
            "database": "" if valkey else "defaultdb",
            "uri": "(not used)",
            "privateUri": "(not used)",
            "urn": f"do:dbaas:{slug}",
            # One per node, as the provider reads them (https://<host>:<port>/metrics).
            "metricsEndpoints": [
                f"https://{kind}{slug}-do-user-1.l.db.ondigitalocean.com:9273/metrics"
                for kind in ("", "replica-")[: int(inputs.get("nodeCount", 1))]
            ],
        }
    if typ == "databaseConnectionPool:DatabaseConnectionPool":
        return {
            "host": "pool-public.l.db.ondigitalocean.com",
            "privateHost": "private-pool.l.db.ondigitalocean.com",
            "port": 25061,  # DigitalOcean's pools listen on 25061, clusters on 25060
            "password": PG_USER_PASSWORD,
            "uri": "(not used)",
            "privateUri": "(not used)",
        }
    if typ == "databaseReplica:DatabaseReplica":
        return {
            "uuid": f"{name}-uuid",
            "host": "replica-public.l.db.ondigitalocean.com",
            "privateHost": "private-replica.l.db.ondigitalocean.com",
            "port": 25060,
            "user": "doadmin",
            "password": "AVNS_doadminPassword",
            "database": "defaultdb",
        }
    if typ == "databaseUser:DatabaseUser":
        return {"password": PG_USER_PASSWORD, "role": "normal"}
    if typ == "spacesBucket:SpacesBucket":
        region = inputs.get("region", "nyc3")
        return {
            "bucketDomainName": f"{inputs['name']}.{region}.digitaloceanspaces.com",
            "endpoint": f"{region}.digitaloceanspaces.com",
            "urn": f"do:space:{inputs['name']}",
        }
    if typ == "cdn:Cdn":
        bucket, region = inputs["origin"].split(".")[:2]
        return {"endpoint": f"{bucket}.{region}.cdn.digitaloceanspaces.com", "ttl": 3600}
    if typ == "spacesKey:SpacesKey":
        return {"accessKey": SPACES_ACCESS_KEY, "secretKey": SPACES_SECRET_KEY}
    if typ == "certificate:Certificate":
        return {"uuid": f"{name}-uuid", "sha1Fingerprint": "00" * 20}
    return None


@dataclass
class Run:
    resources: list[Registered]
    # by resource name, components' too
    options: dict[str, pulumi.ResourceOptions] = field(default_factory=dict)
    # `protect` as the SDK sends it: inherited from the parent when the options leave it unset.
    protected: dict[str, bool] = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)  # exports marked secret as a whole

    def of_type(self, suffix: str) -> list[Registered]:
        return [r for r in self.resources if r.typ.endswith(suffix)]

    def one(self, suffix: str, name: str | None = None) -> Registered:
        (found,) = [r for r in self.of_type(suffix) if name is None or r.name == name]
        return found


class CertificateProbes:
    """Stands in for the hosts' certificate check (cert_renewal): each host answers from
    `answers` by its address ("ok 0", a valid certificate never renewed, by default); the
    commands asked are kept."""

    def __init__(self, answers: dict[str, str] | None = None):
        self.answers, self.asked = answers or {}, []

    def __call__(self, host, address: str, private_key: str, command: str) -> str:
        self.asked.append((host.name, address, private_key, command))
        answer = self.answers.get(address, "ok 0")
        if isinstance(answer, Exception):
            raise answer
        return answer


def run_program(
    config: dict,
    secrets: dict | None = None,
    probes: CertificateProbes | None = None,
    project: str = PROJECT,
    made_with: dict | None = None,
) -> Run:
    """Runs __main__.py with `config` (keys without the project prefix) and the secrets in a
    project named `project`; the hosts' certificate checks are answered by `probes` (no SSH);
    `made_with`: see Mocks."""
    secrets = SECRETS if secrets is None else secrets
    cert_renewal.READER[0] = probes or CertificateProbes()
    mocks = Mocks(made_with)
    # A fresh root stack per run: set_mocks keeps an existing one, and with it the exports of
    # the previous run (an output this run does not export would still be there).
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=project, stack="unit", preview=False)
    values = {**config, **secrets}
    wire = {f"{PROJECT}:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    secret_keys = [f"{PROJECT}:{k}" for k in secrets]
    # As the language host hands them over: the config JSON in PULUMI_CONFIG (where the program
    # finds keys it does not know), the same values and secret keys set in the SDK.
    pulumi.runtime.set_all_config(wire, secret_keys)
    environ = {
        "PULUMI_CONFIG": json.dumps(wire),
        "PULUMI_CONFIG_SECRET_KEYS": json.dumps(secret_keys),
    }
    run = Run(mocks.resources)
    # Mocks see no resource options: they are recorded as the program passes them.
    original = pulumi.CustomResource.__init__

    def recording(self, t, name, props=None, opts=None, *args, **kwargs):
        run.options[name] = opts or pulumi.ResourceOptions()
        original(self, t, name, props, opts, *args, **kwargs)
        run.protected[name] = bool(self._protect)

    pulumi.CustomResource.__init__ = recording
    original_component = pulumi.ComponentResource.__init__

    def recording_component(self, t, name, props=None, opts=None, *args, **kwargs):
        run.options[name] = opts or pulumi.ResourceOptions()
        original_component(self, t, name, props, opts, *args, **kwargs)

    pulumi.ComponentResource.__init__ = recording_component

    @pulumi.runtime.test
    def program():
        runpy.run_path(str(ROOT / "__main__.py"))
        exports = pulumi.runtime.get_root_resource().outputs
        secret = {k: pulumi.Output.from_input(v).is_secret() for k, v in exports.items()}

        async def secret_names():
            return {k for k, flag in secret.items() if await flag}

        collected = pulumi.Output.from_input(secret_names()).apply(run.secret_outputs.update)
        return pulumi.Output.all(collected, pulumi.Output.all(**exports).apply(run.outputs.update))

    try:
        with mock.patch.dict(os.environ, environ):
            program()
    finally:
        pulumi.CustomResource.__init__ = original
        pulumi.ComponentResource.__init__ = original_component
    return run
