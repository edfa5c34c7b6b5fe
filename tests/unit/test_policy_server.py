"""The policy pack as the engine meets it, without the engine: policy/__main__.py started as the
CLI's language host would start it (it prints its port and serves pulumi's Analyzer gRPC
service), then fed the requests the CLI sends during a preview: the pack's info, its config,
`Analyze` per resource (inputs in camelCase, unknowns as Pulumi's sentinels) and `AnalyzeStack`
(final outputs, secrets marked as the CLI marks them). This runs the real pulumi-policy SDK's
deserialization and dispatch; only the CLI and its language host are missing (see the engine test
tests/engine/test_policy_engine.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2 as pb
from pulumi.runtime.proto import analyzer_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
FIREWALL = "digitalocean:index/firewall:Firewall"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # Pulumi's "string not known yet"
SECRET = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270"}


def struct(values: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


@pytest.fixture(scope="module")
def analyzer():
    server = subprocess.Popen(
        [sys.executable, "-u", str(ROOT / "policy" / "__main__.py")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first_line: list[str] = []
    reader = threading.Thread(target=lambda: first_line.append(server.stdout.readline()))
    reader.start()
    reader.join(timeout=60)
    try:
        if not first_line or not first_line[0].strip().isdigit():
            server.kill()
            pytest.fail(f"the pack did not print its port: {server.stderr.read()[-2000:]}")
        channel = grpc.insecure_channel(f"127.0.0.1:{first_line[0].strip()}")
        grpc.channel_ready_future(channel).result(timeout=30)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def analyze(stub, typ: str, name: str, props: dict, secret_outputs=()):
    return stub.Analyze(
        pb.AnalyzeRequest(
            type=typ,
            name=name,
            urn=f"urn:pulumi:dev::mastodon-data::{typ}::{name}",
            properties=struct(props),
            options=pb.AnalyzerResourceOptions(additionalSecretOutputs=list(secret_outputs)),
        ),
        timeout=30,
    )


def test_the_pack_announces_its_policies_as_mandatory(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert info.name == "mastodon-data"
    names = {p.name for p in info.policies}
    assert {"no-public-database-ports", "ssh-only-from-admin-cidrs", "secret-outputs"} <= names
    assert len(names) == 9
    assert {p.enforcementLevel for p in info.policies} == {pb.MANDATORY}


def test_a_firewall_open_to_the_internet_is_refused_over_grpc(analyzer):
    analyzer.Configure(
        pb.ConfigureAnalyzerRequest(
            policyConfig={
                "ssh-only-from-admin-cidrs": pb.PolicyConfig(
                    enforcementLevel=pb.MANDATORY,
                    properties=struct({"allowedCidrs": ["198.51.100.0/24"]}),
                )
            }
        ),
        timeout=30,
    )
    bad = {
        "name": "mastodon-db-dev",
        "inboundRules": [
            {"protocol": "tcp", "portRange": "22", "sourceAddresses": ["203.0.113.9/32"]},
            {"protocol": "tcp", "portRange": "5432", "sourceAddresses": ["0.0.0.0/0"]},
        ],
    }
    response = analyze(analyzer, FIREWALL, "db-firewall", bad)
    by_policy = {d.policyName: d for d in response.diagnostics}
    assert set(by_policy) == {"no-public-database-ports", "ssh-only-from-admin-cidrs"}
    assert all(d.enforcementLevel == pb.MANDATORY for d in by_policy.values())
    assert "0.0.0.0/0" in by_policy["no-public-database-ports"].message
    assert "203.0.113.9/32" in by_policy["ssh-only-from-admin-cidrs"].message

    good = {
        "name": "mastodon-db-dev",
        "inboundRules": [
            {"protocol": "tcp", "portRange": "22", "sourceAddresses": ["198.51.100.7/32"]},
            {"protocol": "tcp", "portRange": "5432", "sourceAddresses": ["10.118.0.0/20"]},
            {"protocol": "tcp", "portRange": "5432", "sourceTags": [UNKNOWN]},  # a preview
        ],
    }
    assert list(analyze(analyzer, FIREWALL, "db-firewall", good).diagnostics) == []


def test_unknown_values_during_a_preview(analyzer):
    droplet = "digitalocean:index/droplet:Droplet"
    # The name decides: the tags (another resource's output) are not read.
    known = {"name": "mastodon-db-dev-primary", "monitoring": False, "tags": [UNKNOWN]}
    found = analyze(analyzer, droplet, "db-primary", known).diagnostics
    # data-kept twice: the request carries no options (no protect, nothing ignored)
    names = sorted(d.policyName for d in found)
    assert names == ["data-kept", "data-kept", "database-droplets-monitored"]
    # Only the tags could tell: the SDK reports it cannot judge before `up` (advisory).
    unsure = {"name": "pg-1", "monitoring": False, "tags": UNKNOWN}
    (diagnostic,) = analyze(analyzer, droplet, "pg-1", unsure).diagnostics
    assert "during preview" in diagnostic.message
    assert diagnostic.enforcementLevel == pb.ADVISORY


def test_analyze_stack_finds_a_cluster_without_firewall_and_cannot_see_secretness(analyzer):
    cluster_urn = (
        "urn:pulumi:dev::mastodon-data::digitalocean:index/databaseCluster:DatabaseCluster::pg"
    )
    resources = [
        pb.AnalyzerResource(
            type="pulumi:pulumi:Stack",
            name="mastodon-data-dev",
            urn="urn:pulumi:dev::mastodon-data::pulumi:pulumi:Stack::mastodon-data-dev",
            # Marked exactly as the CLI marks a secret output (KeepSecrets) ...
            properties=struct({"mastodon_env": {**SECRET, "value": {"DB_PASS": "pw"}}}),
        ),
        pb.AnalyzerResource(
            type="digitalocean:index/databaseCluster:DatabaseCluster",
            name="pg",
            urn=cluster_urn,
            properties=struct({"engine": "pg", "privateNetworkUuid": "vpc-1"}),
        ),
    ]
    response = analyzer.AnalyzeStack(pb.AnalyzeStackRequest(resources=resources), timeout=30)
    (diagnostic,) = response.diagnostics
    assert diagnostic.policyName == "databases-have-firewall"
    assert diagnostic.urn == cluster_urn
    # ... and the SDK drops the mark, so the output rule says why it cannot judge.
    reasons = {n.policy_name: n.reason for n in response.not_applicable}
    assert "AnalyzeStack" in reasons["secret-outputs"]
