"""The stand-in's managed PostgreSQL on its own (no lab hosts, no root): the shapes the
DigitalOcean provider sends and reads (docs/developers/standin.md), its refusals, and what it asks
of its backend (SQL, names, packet filters)."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import pytest

from lab.standin.account import Account
from lab.standin.backend import NO_CA, Backend
from lab.standin.client import Client
from lab.standin.firewall import compile_trusted_sources
from lab.standin.resources.base import Timings
from lab.standin.server import serve

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBGMd9+t1y6Y0s9Z8eL8mQmGf0q6Oe3E3wG8gQ9JkPq7 op"
HOST = "mastodon-data-t-pg-do-user-1-0.db.ondigitalocean.com"
# The body the provider sends for the program's cluster (docs: godo omits nothing of these).
CLUSTER = {
    "name": "mastodon-data-t-pg",
    "engine": "pg",
    "version": "17",
    "size": "db-s-1vcpu-2gb",
    "region": "tor1",
    "num_nodes": 2,
    "private_network_uuid": "",
    "project_id": "",
    "rules": None,
}


class Recorder(Backend):
    """Records what the API asks of the machine."""

    def __init__(self):
        self.sql: list[tuple[str, str, str]] = []  # (node id, database, sql)
        self.names: dict[str, str] = {}
        self.filters: dict[str, str] = {}
        self.destroyed: list[str] = []
        self.started: list[tuple[str, str | None]] = []  # (node id, its primary's id)

    def start_postgres(self, cluster, node, primary):
        self.started.append((node["id"], primary and primary["id"]))

    def run_sql(self, node, sql, database="postgres"):
        self.sql.append((node["id"], database, sql))

    def publish_names(self, names):
        self.names = dict(names)

    def apply_firewall(self, host, script):
        self.filters[host["id"]] = script

    def destroy_host(self, host):
        self.destroyed.append(host["id"])


@contextmanager
def served(backend: Backend, tmp_path) -> Iterator[Client]:
    """An account on `backend` served on loopback: its client (with `.account`, `.backend`)."""
    account = Account(
        backend,
        vpc_pool=("10.240.0.0/24",),
        state_file=tmp_path / "state.json",
        timings=Timings(boot=0.1),
        log=lambda text: None,
    )
    server = serve(account)
    client = Client(server.url)
    client.account, client.backend = account, backend
    try:
        yield client
    finally:
        server.shutdown()
        account.idle(10)


@pytest.fixture
def api(tmp_path):
    with served(Recorder(), tmp_path) as client:
        yield client


def send(client: Client, method: str, path: str, body=None) -> tuple[int, dict | None]:
    """(status, decoded body or None when empty)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(client.url + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {client.token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def online_cluster(client: Client, **changes) -> dict:
    vpc = client.call("POST", "/v2/vpcs", {"name": "v", "region": "tor1"})["vpc"]
    status, document = send(
        client, "POST", "/v2/databases", {**CLUSTER, "private_network_uuid": vpc["id"], **changes}
    )
    assert status == 201, document
    ident = document["database"]["id"]
    assert client.account.idle(10)
    return client.call("GET", f"/v2/databases/{ident}")["database"]


def test_a_cluster_is_created_then_online_with_connections_as_digitalocean_fills_them(api):
    vpc = api.call("POST", "/v2/vpcs", {"name": "v", "region": "tor1"})["vpc"]
    body = {**CLUSTER, "private_network_uuid": vpc["id"]}
    status, created = send(api, "POST", "/v2/databases", body)
    assert status == 201
    assert created["database"]["status"] == "creating"
    password = created["database"]["connection"]["password"]
    assert api.account.idle(10)
    cluster = api.call("GET", f"/v2/databases/{created['database']['id']}")["database"]
    assert cluster["status"] == "online"
    assert (cluster["engine"], cluster["version"], cluster["num_nodes"]) == ("pg", "17", 2)
    assert (cluster["size"], cluster["region"]) == ("db-s-1vcpu-2gb", "tor1")
    assert cluster["private_network_uuid"] == vpc["id"]
    assert cluster["project_id"] and cluster["tags"] == []
    datetime.strptime(cluster["created_at"], "%Y-%m-%dT%H:%M:%SZ")
    for field, host in (
        ("connection", HOST),
        ("private_connection", f"private-{HOST}"),
        ("standby_connection", f"replica-{HOST}"),
        ("standby_private_connection", f"private-replica-{HOST}"),
    ):
        assert cluster[field] == {
            "uri": f"postgres://doadmin:{password}@{host}:25060/defaultdb?sslmode=require",
            "database": "defaultdb",
            "host": host,
            "port": 25060,
            "user": "doadmin",
            "password": password,
            "ssl": True,
        }
    assert cluster["users"] == [{"name": "doadmin", "role": "primary", "password": password}]
    assert cluster["db_names"] == ["defaultdb"]
    assert [e["host"] for e in cluster["metrics_endpoints"]] == [HOST, f"replica-{HOST}"]
    # Every read the same (the provider compares them), the names published for the app side.
    assert api.call("GET", f"/v2/databases/{cluster['id']}")["database"] == cluster
    nodes = api.account.databases.items[cluster["id"]]["nodes"]
    # Node 0 the primary, node 1 its standby.
    assert api.backend.started == [(nodes[0]["id"], None), (nodes[1]["id"], nodes[0]["id"])]
    assert api.backend.names == {
        HOST: nodes[0]["public"],
        f"private-{HOST}": nodes[0]["private"],
        f"replica-{HOST}": nodes[1]["public"],
        f"private-replica-{HOST}": nodes[1]["private"],
    }
    assert api.call("GET", "/v2/databases")["databases"] == [cluster]


def test_a_single_node_cluster_has_no_standby_fields(api):
    cluster = online_cluster(api, num_nodes=1)
    assert "standby_connection" not in cluster
    assert "standby_private_connection" not in cluster
    assert [e["host"] for e in cluster["metrics_endpoints"]] == [HOST]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"engine": "mysql"}, "makes pg and valkey clusters"),
        ({"size": "s-1vcpu-1gb"}, "not a database size"),
        ({"region": "mars1"}, "not available"),
        ({"num_nodes": 4}, "1, 2 or 3"),
        ({"name": "Bad_Name"}, "lowercase"),
    ],
)
def test_a_cluster_the_stand_in_cannot_make_is_refused(api, change, words):
    vpc = api.call("POST", "/v2/vpcs", {"name": "v", "region": "tor1"})["vpc"]
    body = {**CLUSTER, "private_network_uuid": vpc["id"], **change}
    status, document = send(api, "POST", "/v2/databases", body)
    assert status == 422 and document["id"] == "unprocessable_entity"
    assert words in document["message"]


def test_a_cluster_outside_a_vpc_is_refused_with_the_reason(api):
    status, document = send(api, "POST", "/v2/databases", CLUSTER)
    assert status == 422
    assert "in a VPC it has" in document["message"]


def test_the_ca_is_the_accounts_pem_in_padded_base64(api):
    cluster = online_cluster(api)
    document = api.call("GET", f"/v2/databases/{cluster['id']}/ca")
    assert base64.b64decode(document["ca"]["certificate"], validate=True).decode() == NO_CA


def test_a_database_belongs_to_doadmin_and_goes_on_delete(api):
    cluster = online_cluster(api)
    base = f"/v2/databases/{cluster['id']}/dbs"
    assert send(api, "POST", base, {"name": "mastodon_production"}) == (
        201,
        {"db": {"name": "mastodon_production"}},
    )
    node = f"pg-{cluster['id'][:8]}-0"
    assert api.backend.sql[-1] == (
        node,
        "postgres",
        'CREATE DATABASE "mastodon_production" OWNER doadmin',
    )
    assert send(api, "GET", f"{base}/mastodon_production") == (
        200,
        {"db": {"name": "mastodon_production"}},
    )
    assert api.call("GET", f"/v2/databases/{cluster['id']}")["database"]["db_names"] == [
        "defaultdb",
        "mastodon_production",
    ]
    assert send(api, "DELETE", f"{base}/mastodon_production") == (204, None)
    assert api.backend.sql[-1][2] == 'DROP DATABASE "mastodon_production" WITH (FORCE)'
    assert send(api, "GET", f"{base}/mastodon_production")[0] == 404


def test_a_user_has_no_grants_and_its_password_only_in_the_creates_answer(api):
    cluster = online_cluster(api)
    base = f"/v2/databases/{cluster['id']}/users"
    status, created = send(api, "POST", base, {"name": "mastodon"})
    assert status == 201
    password = created["user"]["password"]
    assert created == {"user": {"name": "mastodon", "role": "normal", "password": password}}
    assert password.startswith("AVNS_") and len(password) == 25
    assert api.backend.sql[-1][2] == f"CREATE ROLE \"mastodon\" LOGIN PASSWORD '{password}'"
    assert send(api, "GET", f"{base}/mastodon") == (
        200,
        {"user": {"name": "mastodon", "role": "normal"}},
    )
    assert send(api, "POST", base, {"name": "mastodon"})[0] == 422
    assert send(api, "POST", base, {"name": "doadmin"})[0] == 422
    assert send(api, "DELETE", f"{base}/mastodon") == (204, None)
    # What it owns in every database goes to doadmin, then the role.
    assert [s[1:] for s in api.backend.sql[-2:]] == [
        ("defaultdb", 'REASSIGN OWNED BY "mastodon" TO doadmin; DROP OWNED BY "mastodon"'),
        ("postgres", 'DROP ROLE "mastodon"'),
    ]
    assert send(api, "GET", f"{base}/mastodon")[0] == 404


def test_databases_and_users_wait_for_an_online_cluster(api):
    api.account.backend.create_host = lambda *args: time.sleep(1)
    vpc = api.call("POST", "/v2/vpcs", {"name": "v", "region": "tor1"})["vpc"]
    _, created = send(api, "POST", "/v2/databases", {**CLUSTER, "private_network_uuid": vpc["id"]})
    status, document = send(
        api, "POST", f"/v2/databases/{created['database']['id']}/users", {"name": "mastodon"}
    )
    assert status == 412 and "creating" in document["message"]


def test_trusted_sources_are_kept_in_order_and_enforced_on_every_node(api):
    cluster = online_cluster(api)
    base = f"/v2/databases/{cluster['id']}/firewall"
    nodes = api.account.databases.items[cluster["id"]]["nodes"]
    assert set(api.backend.filters) == {n["id"] for n in nodes}
    assert api.backend.filters[nodes[0]["id"]] == compile_trusted_sources(None, [25060, 25061])
    empty = {"uuid": "", "cluster_uuid": "", "created_at": "0001-01-01T00:00:00Z"}
    rules = [{**empty, "type": "tag", "value": "mastodon-app"},
             {**empty, "type": "ip_addr", "value": "10.118.0.0/20"}]  # fmt: skip
    assert send(api, "PUT", base, {"rules": rules}) == (204, None)
    first = api.call("GET", base)["rules"]
    assert [(r["type"], r["value"], r["cluster_uuid"]) for r in first] == [
        ("tag", "mastodon-app", cluster["id"]),
        ("ip_addr", "10.118.0.0/20", cluster["id"]),
    ]
    for rule in first:
        datetime.strptime(rule["created_at"], "%Y-%m-%dT%H:%M:%SZ")
    own = [f"{n[side]}/32" for n in nodes for side in ("public", "private")]
    for node in nodes:
        assert api.backend.filters[node["id"]] == compile_trusted_sources(
            [*own, "10.118.0.0/20"], [25060, 25061]
        )
    # A rule that survives a PUT keeps its uuid; the order is the PUT's.
    send(api, "PUT", base, {"rules": [{**empty, "type": "ip_addr", "value": "10.118.0.0/20"}]})
    second = api.call("GET", base)["rules"]
    assert second == [first[1]]
    assert (
        send(api, "PUT", base, {"rules": [{**empty, "type": "ip_addr", "value": "fd00::/8"}]})[0]
        == 422
    )
    assert send(api, "PUT", base, {"rules": [{**empty, "type": "droplet", "value": "x"}]})[0] == 422
    assert send(api, "PUT", base, {"rules": []}) == (204, None)
    assert api.call("GET", base) == {"rules": []}
    assert api.backend.filters[nodes[1]["id"]] == compile_trusted_sources(None, [25060, 25061])


def test_tag_and_droplet_rules_let_in_the_droplets_addresses(api):
    cluster = online_cluster(api)
    key = api.register_key("op", KEY)
    body = {"name": "app-1", "region": "tor1", "size": "s-1vcpu-1gb", "image": "debian-12-x64",
            "vpc_uuid": cluster["private_network_uuid"], "ssh_keys": [key["id"]]}  # fmt: skip
    tagged = api.call("POST", "/v2/droplets", {**body, "tags": ["mastodon-app"]})["droplet"]
    named = api.call("POST", "/v2/droplets", {**body, "name": "app-2"})["droplet"]
    api.call("POST", "/v2/droplets", {**body, "name": "other", "tags": ["x"]})
    assert api.account.idle(10)
    rules = [
        {"type": "tag", "value": "mastodon-app"},
        {"type": "droplet", "value": str(named["id"])},
    ]
    send(api, "PUT", f"/v2/databases/{cluster['id']}/firewall", {"rules": rules})
    records = api.account.droplets.items
    nodes = api.account.databases.items[cluster["id"]]["nodes"]
    allowed = [f"{n[side]}/32" for n in nodes for side in ("public", "private")]
    allowed += [f"{records[str(d['id'])][side]}/32" for d in (tagged, named)
                for side in ("public", "private")]  # fmt: skip
    script = api.backend.filters[nodes[0]["id"]]
    assert script == compile_trusted_sources(allowed, [25060, 25061])
    assert f"ip saddr {{ {', '.join(allowed)} }} accept" in script
    assert "tcp dport { 25060, 25061 } drop" in script


def test_a_deleted_cluster_leaves_no_node_and_no_state(api):
    cluster = online_cluster(api)
    nodes = [n["id"] for n in api.account.databases.items[cluster["id"]]["nodes"]]
    assert send(api, "DELETE", f"/v2/databases/{cluster['id']}") == (204, None)
    assert api.account.idle(10)
    assert sorted(api.backend.destroyed) == sorted(nodes)
    assert send(api, "GET", f"/v2/databases/{cluster['id']}")[0] == 404
    assert api.backend.names == {}
    assert api.account.machines.in_use() == []
    assert json.loads(api.account.state_file.read_text())["databases"] == {}
    assert api.account.state_file.stat().st_mode & 0o777 == 0o600  # it held the passwords
    assert not set(nodes) & set(api.account.firewalls.applied)


def test_a_cluster_deleted_while_creating_leaves_no_node(api):
    made, begun = [], threading.Event()

    def create_host(host, vpc, keys):
        begun.set()
        time.sleep(0.5)
        made.append(host["id"])

    api.backend.create_host = create_host
    vpc = api.call("POST", "/v2/vpcs", {"name": "v", "region": "tor1"})["vpc"]
    _, created = send(api, "POST", "/v2/databases", {**CLUSTER, "private_network_uuid": vpc["id"]})
    ident = created["database"]["id"]
    assert begun.wait(10)  # the delete comes while the first node is being made
    assert send(api, "DELETE", f"/v2/databases/{ident}") == (204, None)
    assert api.account.idle(10)
    assert made == [f"pg-{ident[:8]}-0"]  # the standby was not begun
    assert sorted(api.backend.destroyed) == [f"pg-{ident[:8]}-0", f"pg-{ident[:8]}-1"]
    assert send(api, "GET", f"/v2/databases/{ident}")[0] == 404


def test_the_metrics_credentials_are_the_accounts_one_pair_kept_across_a_restart(tmp_path):
    with served(Recorder(), tmp_path) as client:
        first = client.call("GET", "/v2/databases/metrics/credentials")["credentials"]
        assert set(first) == {"basic_auth_username", "basic_auth_password"}
        assert first["basic_auth_username"] == "doadmin-metrics-1"
        assert first["basic_auth_password"].startswith("AVNS_")
        assert client.call("GET", "/v2/databases/metrics/credentials")["credentials"] == first
    with served(Recorder(), tmp_path) as client:  # the same state file
        assert client.call("GET", "/v2/databases/metrics/credentials")["credentials"] == first


def test_every_node_of_a_cluster_has_a_metrics_endpoint(api):
    assert online_cluster(api)["metrics_endpoints"] == [
        {"host": HOST, "port": 9273},
        {"host": f"replica-{HOST}", "port": 9273},
    ]
