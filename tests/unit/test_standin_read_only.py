"""The stand-in's read-only nodes (`DatabaseReplica`) on their own (no lab hosts, no root): the
shapes the DigitalOcean provider sends and reads (issue 20 spec §7, §8), the refusals, and what
they ask of the backend (a host cloned from the primary node, names, packet filters, following a
new primary)."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
from test_standin_databases import CLUSTER, api, online_cluster, send  # noqa: F401 - fixture

from lab.standin.account import Account
from lab.standin.firewall import compile_trusted_sources
from lab.standin.resources.base import Timings

NAME = "mastodon-data-t-pg-replica"
HOST = f"{NAME}-do-user-1-0.db.ondigitalocean.com"
EMPTY = {"uuid": "", "cluster_uuid": "", "created_at": "0001-01-01T00:00:00Z"}


@pytest.fixture
def ro(api):  # noqa: F811 - the fixture imported above
    """The API, its backend also recording what follows a new primary and what is recovered."""
    backend = api.backend
    backend.followed, backend.recovered = [], []
    backend.follow_primary = lambda cluster, node, primary: (
        backend.followed.append((node["id"], primary["id"])) or "followed"
    )
    backend.recover = lambda host, vpc, keys: backend.recovered.append(host["id"])
    return api


def replica_body(cluster: dict, **changes) -> dict:
    """What the provider sends for the program's replica (godo omits none of these)."""
    return {"name": NAME, "region": "tor1", "size": cluster["size"],
            "private_network_uuid": cluster["private_network_uuid"], **changes}  # fmt: skip


def online_replica(client, cluster: dict, **changes) -> dict:
    base = f"/v2/databases/{cluster['id']}/replicas"
    status, created = send(client, "POST", base, replica_body(cluster, **changes))
    assert status == 201, created
    assert client.account.idle(10)
    return client.call("GET", f"{base}/{created['replica']['name']}")["replica"]


def test_a_replica_is_forking_then_online_on_its_own_host_and_names(ro):
    cluster = online_cluster(ro)
    base = f"/v2/databases/{cluster['id']}/replicas"
    status, created = send(ro, "POST", base, replica_body(cluster))
    assert status == 201
    assert created["replica"]["status"] == "forking"
    assert ro.account.idle(10)
    replica = ro.call("GET", f"{base}/{NAME}")["replica"]
    password = cluster["connection"]["password"]
    assert replica == {
        "id": created["replica"]["id"],
        "name": NAME,
        "region": "tor1",
        "size": "db-s-1vcpu-2gb",
        "status": "online",
        "created_at": created["replica"]["created_at"],
        "private_network_uuid": cluster["private_network_uuid"],
        "tags": [],
        "storage_size_mib": 0,
        "connection": {
            "uri": f"postgres://doadmin:{password}@{HOST}:25060/defaultdb?sslmode=require",
            "database": "defaultdb",
            "host": HOST,
            "port": 25060,
            "user": "doadmin",
            "password": password,
            "ssl": True,
        },
        "private_connection": {
            "uri": f"postgres://doadmin:{password}@private-{HOST}:25060/defaultdb?sslmode=require",
            "database": "defaultdb",
            "host": f"private-{HOST}",
            "port": 25060,
            "user": "doadmin",
            "password": password,
            "ssl": True,
        },
    }
    datetime.strptime(replica["created_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert ro.call("GET", f"{base}/{NAME}")["replica"] == replica  # every read the same
    assert ro.call("GET", base) == {"replicas": [replica]}
    record = ro.account.database_replicas.items[replica["id"]]
    node, primary = record["node"], ro.account.databases.items[cluster["id"]]["nodes"][0]
    assert (node["id"], node["name"]) == (f"ro-{replica['id'][:8]}", NAME)
    # Cloned from the cluster's primary node, its host names published for the app side.
    assert ro.backend.started[-1] == (node["id"], primary["id"])
    assert ro.backend.names[HOST] == node["public"]
    assert ro.backend.names[f"private-{HOST}"] == node["private"]
    members = ro.call("GET", f"/v2/vpcs/{cluster['private_network_uuid']}/members")["members"]
    assert {"urn": f"do:dbaas:{replica['id']}", "name": NAME,
            "created_at": replica["created_at"]} in members  # fmt: skip


def test_a_replica_waits_for_an_online_cluster_with_412(ro):
    ro.account.backend.create_host = lambda *args: time.sleep(1)
    vpc = ro.call("POST", "/v2/vpcs", {"name": "v", "region": "tor1"})["vpc"]
    _, created = send(ro, "POST", "/v2/databases", {**CLUSTER, "private_network_uuid": vpc["id"]})
    cluster = created["database"]
    status, document = send(
        ro, "POST", f"/v2/databases/{cluster['id']}/replicas", replica_body(cluster)
    )
    assert (status, document["id"]) == (412, "precondition_failed")
    assert "creating" in document["message"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"size": "db-s-1vcpu-1gb"}, "smaller than the cluster's db-s-1vcpu-2gb"),
        ({"size": "s-1vcpu-1gb"}, "not a database size"),
        ({"name": "mastodon-data-t-pg"}, "already exists"),
        ({"name": "Bad_Name"}, "lowercase"),
        ({"region": "nyc3"}, "in tor1 only"),
        ({"private_network_uuid": "5d8e2a57-1c1e-4c6b-9f0e-3d9b2a7c4e11"}, "cluster's VPC"),
        ({"storage_size_mib": 20480}, "storage_size_mib"),
    ],
)
def test_a_replica_the_stand_in_cannot_make_is_refused_with_422(ro, change, words):
    cluster = online_cluster(ro)
    base = f"/v2/databases/{cluster['id']}/replicas"
    status, document = send(ro, "POST", base, replica_body(cluster, **change))
    assert (status, document["id"]) == (422, "unprocessable_entity")
    assert words in document["message"]
    assert ro.call("GET", base) == {"replicas": []}


def test_only_pg_clusters_have_replicas_and_an_unknown_cluster_is_404(ro):
    cluster = online_cluster(ro)
    ro.account.databases.items[cluster["id"]]["engine"] = "valkey"
    status, document = send(
        ro, "POST", f"/v2/databases/{cluster['id']}/replicas", replica_body(cluster)
    )
    assert status == 422 and "only supported for PostgreSQL" in document["message"]
    unknown = "/v2/databases/9cc10173-e9ea-4176-9dbc-a4cee4c4ff30/replicas"
    assert send(ro, "POST", unknown, replica_body(cluster))[0] == 404
    assert send(ro, "GET", f"/v2/databases/{cluster['id']}/replicas/nope")[0] == 404


def test_a_replicas_trusted_sources_are_its_own_by_its_uuid(ro):
    cluster = online_cluster(ro)
    replica = online_replica(ro, cluster)
    node = ro.account.database_replicas.items[replica["id"]]["node"]
    nodes = ro.account.databases.items[cluster["id"]]["nodes"]
    assert ro.backend.filters[node["id"]] == compile_trusted_sources(None, [25060])
    rules = [{**EMPTY, "type": "ip_addr", "value": "10.118.0.0/20"}]
    assert send(ro, "PUT", f"/v2/databases/{replica['id']}/firewall", {"rules": rules}) == (
        204,
        None,
    )
    [rule] = ro.call("GET", f"/v2/databases/{replica['id']}/firewall")["rules"]
    assert (rule["type"], rule["value"], rule["cluster_uuid"]) == (
        "ip_addr",
        "10.118.0.0/20",
        replica["id"],
    )
    own = [f"{node['public']}/32", f"{node['private']}/32"]
    assert ro.backend.filters[node["id"]] == compile_trusted_sources(
        [*own, "10.118.0.0/20"], [25060]
    )
    # The cluster's rules are untouched; once it has some, they let the replica in (it streams).
    assert ro.call("GET", f"/v2/databases/{cluster['id']}/firewall") == {"rules": []}
    assert ro.backend.filters[nodes[0]["id"]] == compile_trusted_sources(None, [25060, 25061])
    rules = [{**EMPTY, "type": "ip_addr", "value": "10.9.0.0/16"}]
    send(ro, "PUT", f"/v2/databases/{cluster['id']}/firewall", {"rules": rules})
    cluster_own = [f"{n[side]}/32" for n in nodes for side in ("public", "private")]
    assert ro.backend.filters[nodes[0]["id"]] == compile_trusted_sources(
        [*cluster_own, *own, "10.9.0.0/16"],
        [25060, 25061],  # the cluster's: its pools' too
    )
    assert ro.backend.filters[node["id"]] == compile_trusted_sources(
        [*own, "10.118.0.0/20"], [25060]
    )


def test_a_replica_resizes_by_its_uuid_never_below_the_clusters_size(ro):
    cluster = online_cluster(ro)
    replica = online_replica(ro, cluster)
    resize = f"/v2/databases/{replica['id']}/resize"
    assert send(ro, "PUT", resize, {"size": "db-s-1vcpu-1gb", "num_nodes": 1})[0] == 422
    assert send(ro, "PUT", resize, {"size": "db-s-2vcpu-4gb", "num_nodes": 2})[0] == 422
    assert send(ro, "PUT", resize, {"size": "db-s-2vcpu-4gb", "num_nodes": 1}) == (202, None)
    assert ro.account.idle(10)
    after = ro.call("GET", f"/v2/databases/{cluster['id']}/replicas/{NAME}")["replica"]
    assert (after["size"], after["status"], after["id"]) == (
        "db-s-2vcpu-4gb",
        "online",
        replica["id"],
    )
    status, document = send(
        ro, "PUT", f"/v2/databases/{cluster['id']}/resize", {"size": "db-s-2vcpu-4gb",
                                                             "num_nodes": 2}
    )  # fmt: skip
    assert status == 422 and "not clusters" in document["message"]


def test_a_deleted_replica_leaves_no_host_name_or_filter(ro):
    cluster = online_cluster(ro)
    replica = online_replica(ro, cluster)
    node = ro.account.database_replicas.items[replica["id"]]["node"]
    path = f"/v2/databases/{cluster['id']}/replicas/{NAME}"
    assert send(ro, "DELETE", path) == (204, None)
    assert ro.account.idle(10)
    assert ro.backend.destroyed == [node["id"]]
    assert send(ro, "GET", path)[0] == 404
    assert HOST not in ro.backend.names and f"private-{HOST}" not in ro.backend.names
    assert node["id"] not in ro.account.firewalls.applied
    assert json.loads(ro.account.state_file.read_text())["database_replicas"] == {}
    assert send(ro, "GET", f"/v2/databases/{replica['id']}/firewall")[0] == 404


def test_a_deleted_cluster_takes_its_replicas_along(ro):
    cluster = online_cluster(ro)
    replica = online_replica(ro, cluster)
    node = ro.account.database_replicas.items[replica["id"]]["node"]
    assert send(ro, "DELETE", f"/v2/databases/{cluster['id']}") == (204, None)
    assert ro.account.idle(10)
    assert node["id"] in ro.backend.destroyed
    assert ro.account.database_replicas.items == {}
    assert ro.account.machines.in_use() == []


def test_after_a_takeover_every_replica_follows_the_new_primary(ro):
    cluster = online_cluster(ro)
    first = online_replica(ro, cluster)
    second = online_replica(ro, cluster, name="mastodon-data-t-pg-replica-2")
    record = ro.account.databases.items[cluster["id"]]
    record["nodes"].reverse()  # as a takeover leaves it: the promoted node first
    ro.account.database_replicas.primary_moved(record)
    nodes = ro.account.database_replicas.items
    assert sorted(ro.backend.followed) == sorted(
        (nodes[r["id"]]["node"]["id"], record["nodes"][0]["id"]) for r in (first, second)
    )
    # Nothing of the API moves.
    assert ro.call("GET", f"/v2/databases/{cluster['id']}/replicas/{NAME}")["replica"] == first


def test_a_replica_comes_back_after_a_restart_of_the_stand_in(ro, tmp_path):
    cluster = online_cluster(ro)
    replica = online_replica(ro, cluster)
    node = ro.account.database_replicas.items[replica["id"]]["node"]
    again = Account(ro.backend, vpc_pool=("10.240.0.0/24",), state_file=ro.account.state_file,
                    timings=Timings(boot=0.1), log=lambda text: None)  # fmt: skip
    ro.backend.recovered.clear()
    again.recover()
    assert again.idle(10)
    assert node["id"] in ro.backend.recovered
    assert ro.backend.names[f"private-{HOST}"] == node["private"]
    assert again.database_replicas.items[replica["id"]]["status"] == "online"
