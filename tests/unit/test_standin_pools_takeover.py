"""The stand-in's connection pools and standby takeover on their own (no lab hosts, no root): the
shapes the DigitalOcean provider sends and reads (the issue 20 spec, §6 and §14), DigitalOcean's
limit on pool sizes, and what they ask of the machine (PgBouncer's configuration, the promotion,
the new standby)."""

from __future__ import annotations

import time

import pytest
from test_standin_databases import CLUSTER, HOST, Recorder, online_cluster, send, served

from lab.standin.client import Client
from lab.standin.firewall import compile_trusted_sources
from lab.standin.lab_pools import pools_config

# What the provider sends for the program's pool (all five fields, always).
POOL = {"user": "mastodon", "name": "mastodon_pool", "size": 20, "db": "mastodon_production",
        "mode": "transaction"}  # fmt: skip


class PoolRecorder(Recorder):
    """Records the pools asked of each node too, and answers health checks as told."""

    def __init__(self):
        super().__init__()
        self.pools: dict[str, tuple[dict, list[str]]] = {}  # node id -> (pools, users)
        self.down: set[str] = set()  # node ids whose health check fails
        self.promoted: list[str] = []
        self.followed: list[tuple[str, str]] = []  # (standby id, new primary id)
        self.created: list[str] = []

    def configure_pools(self, cluster, node):
        self.pools[node["id"]] = (dict(cluster["pools"]), sorted(cluster["users"]))

    def node_healthy(self, node):
        return node["id"] not in self.down

    def promote(self, node):
        self.promoted.append(node["id"])

    def follow_primary(self, cluster, node, primary):
        self.followed.append((node["id"], primary["id"]))
        return "followed"

    def create_host(self, host, vpc, public_keys):
        self.created.append(host["id"])


@pytest.fixture
def api(tmp_path):
    with served(PoolRecorder(), tmp_path) as client:
        yield client


def cluster_with_user(client: Client, **changes) -> tuple[dict, str]:
    """An online cluster with the program's database and user; (cluster, the user's password)."""
    cluster = online_cluster(client, **changes)
    base = f"/v2/databases/{cluster['id']}"
    send(client, "POST", f"{base}/dbs", {"name": "mastodon_production"})
    _, user = send(client, "POST", f"{base}/users", {"name": "mastodon"})
    return cluster, user["user"]["password"]


def pool_connection(host: str, password: str) -> dict:
    return {
        "uri": f"postgres://mastodon:{password}@{host}:25061/mastodon_pool?sslmode=require",
        "database": "mastodon_pool",
        "host": host,
        "port": 25061,
        "user": "mastodon",
        "password": password,
        "ssl": True,
    }


def test_a_pool_is_on_the_clusters_host_names_at_25061_and_in_pgbouncer_on_every_node(api):
    cluster, password = cluster_with_user(api)
    base = f"/v2/databases/{cluster['id']}/pools"
    status, created = send(api, "POST", base, POOL)
    assert status == 201
    expected = {
        "user": "mastodon",
        "name": "mastodon_pool",
        "size": 20,
        "db": "mastodon_production",
        "mode": "transaction",
        "connection": pool_connection(HOST, password),
        "private_connection": pool_connection(f"private-{HOST}", password),
        "standby_connection": pool_connection(f"replica-{HOST}", password),
        "standby_private_connection": pool_connection(f"private-replica-{HOST}", password),
    }
    assert created == {"pool": expected}
    assert send(api, "GET", f"{base}/mastodon_pool") == (200, {"pool": expected})
    assert send(api, "GET", base) == (200, {"pools": [expected]})
    nodes = [n["id"] for n in api.account.databases.items[cluster["id"]]["nodes"]]
    wanted = ({"mastodon_pool": {k: POOL[k] for k in ("user", "db", "mode", "size")}},
              ["doadmin", "mastodon"])  # fmt: skip
    assert api.backend.pools == {node: wanted for node in nodes}
    # A pool named twice, and one of a database or user the cluster lacks, are refused.
    assert send(api, "POST", base, {**POOL, "size": 1})[1]["message"] == (
        "a connection pool named mastodon_pool already exists"
    )
    assert (
        "database 'nope'"
        in send(api, "POST", base, {**POOL, "name": "other", "db": "nope"})[1]["message"]
    )
    assert (
        "user 'nope'"
        in send(api, "POST", base, {**POOL, "name": "other", "user": "nope"})[1]["message"]
    )
    assert send(api, "POST", base, {**POOL, "name": "other", "mode": "x"})[0] == 422
    # Deleted: gone from the API and from PgBouncer.
    assert send(api, "DELETE", f"{base}/mastodon_pool") == (204, None)
    assert send(api, "GET", f"{base}/mastodon_pool")[0] == 404
    assert send(api, "DELETE", f"{base}/mastodon_pool")[0] == 404
    assert api.backend.pools[nodes[0]] == ({}, ["doadmin", "mastodon"])


def test_pools_share_25_connections_per_gib_minus_3_and_one_over_is_refused(api):
    cluster, _ = cluster_with_user(api)  # db-s-1vcpu-2gb: 47
    base = f"/v2/databases/{cluster['id']}/pools"
    assert send(api, "POST", base, {**POOL, "size": 30})[0] == 201
    status, refused = send(api, "POST", base, {**POOL, "name": "second", "size": 18})
    assert (status, refused["id"], refused["message"]) == (
        422,
        "unprocessable_entity",
        "pool size 18 exceeds the 17 connections available on db-s-1vcpu-2gb "
        "(25 per GiB, 3 reserved, 30 used by other pools)",
    )
    assert send(api, "POST", base, {**POOL, "name": "second", "size": 17})[0] == 201
    assert [p["name"] for p in api.call("GET", base)["pools"]] == ["mastodon_pool", "second"]


def test_a_pool_on_the_biggest_size_alone_may_take_the_whole_limit(api):
    cluster, _ = cluster_with_user(api, size="db-s-4vcpu-8gb")
    base = f"/v2/databases/{cluster['id']}/pools"
    message = send(api, "POST", base, {**POOL, "size": 198})[1]["message"]
    assert message.startswith("pool size 198 exceeds the 197 connections available on db-s-4vcpu")
    assert send(api, "POST", base, {**POOL, "size": 197})[0] == 201


def test_pgbouncer_learns_of_a_new_and_a_deleted_user(api):
    cluster, _ = cluster_with_user(api)
    base = f"/v2/databases/{cluster['id']}"
    send(api, "POST", f"{base}/pools", POOL)
    send(api, "POST", f"{base}/users", {"name": "reader"})
    node = api.account.databases.items[cluster["id"]]["nodes"][0]["id"]
    assert api.backend.pools[node][1] == ["doadmin", "mastodon", "reader"]
    send(api, "DELETE", f"{base}/users/reader")
    assert api.backend.pools[node][1] == ["doadmin", "mastodon"]


def test_a_pool_waits_for_an_online_cluster(api):
    api.account.backend.create_host = lambda *args: time.sleep(1)
    vpc = api.call("POST", "/v2/vpcs", {"name": "v", "region": "tor1"})["vpc"]
    _, created = send(api, "POST", "/v2/databases", {**CLUSTER, "private_network_uuid": vpc["id"]})
    status, document = send(api, "POST", f"/v2/databases/{created['database']['id']}/pools", POOL)
    assert status == 412 and "creating" in document["message"]


def watch_rounds(client: Client, rounds: int) -> None:
    for _ in range(rounds):
        client.account.database_takeover.watch()


def test_the_standby_takes_over_after_three_failed_checks_and_a_new_standby_replaces_the_dead(
    api,
):
    cluster, _ = cluster_with_user(api)
    send(api, "POST", f"/v2/databases/{cluster['id']}/pools", POOL)
    rules = [{"type": "ip_addr", "value": "10.118.0.0/20"}]
    send(api, "PUT", f"/v2/databases/{cluster['id']}/firewall", {"rules": rules})
    before = {
        "cluster": api.call("GET", f"/v2/databases/{cluster['id']}")["database"],
        "pool": api.call("GET", f"/v2/databases/{cluster['id']}/pools/mastodon_pool"),
    }
    record = api.account.databases.items[cluster["id"]]
    dead, standby = [n["id"] for n in record["nodes"]]
    api.backend.down.add(dead)
    watch_rounds(api, 2)  # two failures: not yet
    assert api.backend.promoted == []
    watch_rounds(api, 1)
    assert api.account.idle(10)
    assert api.backend.promoted == [standby]
    assert api.backend.destroyed == [dead]
    replacement = f"pg-{cluster['id'][:8]}-2"
    assert [n["id"] for n in record["nodes"]] == [standby, replacement]
    assert record["nodes"][1]["host_ready"]
    assert api.backend.started[-1] == (replacement, standby)  # cloned from the new primary
    assert replacement in api.backend.pools  # its PgBouncer too
    nodes = record["nodes"]
    assert api.backend.names == {
        HOST: nodes[0]["public"],
        f"private-{HOST}": nodes[0]["private"],
        f"replica-{HOST}": nodes[1]["public"],
        f"private-replica-{HOST}": nodes[1]["private"],
    }
    # Trusted sources let the new node in (its clone passes the primary's filter), and cover
    # PgBouncer's port on it.
    own = [f"{n[side]}/32" for n in nodes for side in ("public", "private")]
    for node in nodes:
        assert api.backend.filters[node["id"]] == compile_trusted_sources(
            [*own, "10.118.0.0/20"], [25060, 25061]
        )
    assert dead not in api.account.firewalls.applied
    # What the provider reads is what it read before.
    assert api.call("GET", f"/v2/databases/{cluster['id']}")["database"] == before["cluster"]
    pool = api.call("GET", f"/v2/databases/{cluster['id']}/pools/mastodon_pool")
    assert pool == before["pool"]
    # A second failure takes the next number.
    api.backend.down.add(standby)
    watch_rounds(api, 3)
    assert api.account.idle(10)
    assert [n["id"] for n in record["nodes"]] == [replacement, f"pg-{cluster['id'][:8]}-3"]


def test_a_healthy_check_resets_the_count_and_a_third_node_follows_the_new_primary(api):
    cluster, _ = cluster_with_user(api, num_nodes=3)
    record = api.account.databases.items[cluster["id"]]
    primary, first, second = [n["id"] for n in record["nodes"]]
    api.backend.down.add(primary)
    watch_rounds(api, 2)
    api.backend.down.clear()
    watch_rounds(api, 1)
    api.backend.down.add(primary)
    watch_rounds(api, 2)
    assert api.backend.promoted == []  # never three in a row
    watch_rounds(api, 1)
    assert api.account.idle(10)
    assert api.backend.promoted == [first]
    assert api.backend.followed == [(second, first)]
    assert [n["id"] for n in record["nodes"]] == [first, second, f"pg-{cluster['id'][:8]}-3"]


def test_a_single_node_cluster_or_one_being_made_is_not_taken_over(api):
    single = online_cluster(api, num_nodes=1)
    api.backend.down.add(api.account.databases.items[single["id"]]["nodes"][0]["id"])
    watch_rounds(api, 5)
    assert api.account.idle(10)
    assert api.backend.promoted == []


def test_a_valkey_cluster_with_a_standby_is_not_watched(api):
    valkey = online_cluster(api, engine="valkey", version="8", num_nodes=2)
    api.backend.down.add(api.account.databases.items[valkey["id"]]["nodes"][0]["id"])
    watch_rounds(api, 5)
    assert api.account.idle(10)
    assert api.backend.promoted == []


def test_pgbouncers_configuration_has_one_entry_per_pool_and_no_secret():
    cluster = {
        "pools": {
            "mastodon_pool": {"user": "mastodon", "db": "mastodon_production",
                              "mode": "transaction", "size": 20},
            "anyone": {"user": "", "db": "defaultdb", "mode": "session", "size": 5},
        },
        "users": {"doadmin": {"password": "AVNS_secret"}},
    }  # fmt: skip
    text = pools_config(cluster)
    assert text.startswith(
        "[databases]\n"
        "mastodon_pool = host=127.0.0.1 port=25060 dbname=mastodon_production user=mastodon "
        "pool_size=20 pool_mode=transaction\n"
        "anyone = host=127.0.0.1 port=25060 dbname=defaultdb pool_size=5 pool_mode=session\n"
        "\n[pgbouncer]\nlisten_addr = *\nlisten_port = 25061\n"
    )
    for setting in ("auth_type = scram-sha-256", "client_tls_sslmode = require",
                    "server_tls_sslmode = require",
                    "auth_file = /etc/pgbouncer/standin-users.txt"):  # fmt: skip
        assert f"\n{setting}\n" in text
    assert "AVNS_secret" not in text
