"""The stand-in's managed Valkey on its own (no lab hosts, no root): the cluster's fields as the
DigitalOcean provider reads them, its config (`DatabaseValkeyConfig`) and eviction policy, what
each asks of the backend, and what Valkey does not have."""

from __future__ import annotations

import time

import pytest
from test_standin_databases import Recorder, send

from lab.standin.account import Account
from lab.standin.client import Client
from lab.standin.firewall import compile_trusted_sources
from lab.standin.resources.base import Timings
from lab.standin.resources.valkey import DEFAULT_CONFIG, server_settings
from lab.standin.server import serve

HOST = "mastodon-data-t-valkey-do-user-1-0.db.ondigitalocean.com"
# The body the provider sends for the program's Valkey cluster.
CLUSTER = {
    "name": "mastodon-data-t-valkey",
    "engine": "valkey",
    "version": "8",
    "size": "db-s-1vcpu-2gb",
    "region": "tor1",
    "num_nodes": 2,
    "private_network_uuid": "",
    "project_id": "",
    "rules": None,
}
# The valkey-server directives of a new 2 GiB cluster.
NEW_SETTINGS = {
    "maxmemory": "1536mb",
    "maxmemory-policy": "noeviction",
    "timeout": "300",
    "lfu-log-factor": "10",
    "lfu-decay-time": "1",
    "notify-keyspace-events": "",
    "save": "600 1",
    "acl-pubsub-default": "allchannels",
    "client-output-buffer-limit": "pubsub 64mb 16mb 60",
    "active-expire-effort": "1",
    "port": "0",
    "databases": "16",
    "io-threads": "1",
}


class ValkeyRecorder(Recorder):
    def __init__(self):
        super().__init__()
        self.valkey_started: list[tuple[str, str | None, dict]] = []
        self.configured: list[tuple[str, dict]] = []  # (node id, settings)

    def start_valkey(self, cluster, node, primary, settings):
        self.valkey_started.append((node["id"], primary and primary["id"], dict(settings)))

    def configure_valkey(self, cluster, node, settings):
        self.configured.append((node["id"], dict(settings)))


@pytest.fixture
def api(tmp_path):
    backend = ValkeyRecorder()
    account = Account(
        backend,
        state_file=tmp_path / "state.json",
        timings=Timings(boot=0.1),
        log=lambda text: None,
    )
    server = serve(account)
    client = Client(server.url)
    client.account, client.backend = account, backend
    yield client
    server.shutdown()
    account.idle(10)


def create(client: Client, **changes) -> tuple[int, dict]:
    vpc = client.call("POST", "/v2/vpcs", {"name": "v", "region": "tor1"})["vpc"]
    body = {**CLUSTER, "private_network_uuid": vpc["id"], **changes}
    return send(client, "POST", "/v2/databases", body)


def online(client: Client, **changes) -> dict:
    status, created = create(client, **changes)
    assert status == 201, created
    assert client.account.idle(10)
    return client.call("GET", f"/v2/databases/{created['database']['id']}")["database"]


def test_a_valkey_cluster_has_tls_connections_for_user_default_on_25061(api):
    status, created = create(api)
    assert status == 201 and created["database"]["status"] == "creating"
    password = created["database"]["connection"]["password"]
    assert api.account.idle(10)
    cluster = api.call("GET", f"/v2/databases/{created['database']['id']}")["database"]
    assert cluster["status"] == "online"
    assert (cluster["engine"], cluster["version"], cluster["num_nodes"]) == ("valkey", "8", 2)
    for field, host in (
        ("connection", HOST),
        ("private_connection", f"private-{HOST}"),
        ("standby_connection", f"replica-{HOST}"),
        ("standby_private_connection", f"private-replica-{HOST}"),
    ):
        assert cluster[field] == {
            "uri": f"rediss://default:{password}@{host}:25061",
            "database": "",
            "host": host,
            "port": 25061,
            "user": "default",
            "password": password,
            "ssl": True,
        }
    assert cluster["users"] == [{"name": "default", "role": "primary", "password": password}]
    assert cluster["db_names"] == []
    nodes = api.account.databases.items[cluster["id"]]["nodes"]
    assert [n["id"] for n in nodes] == [f"valkey-{cluster['id'][:8]}-{i}" for i in (0, 1)]
    # Node 0 the primary, node 1 its replica, both with the new cluster's settings.
    assert api.backend.valkey_started == [
        (nodes[0]["id"], None, NEW_SETTINGS),
        (nodes[1]["id"], nodes[0]["id"], NEW_SETTINGS),
    ]
    assert api.backend.started == []  # no PostgreSQL
    assert api.backend.names[HOST] == nodes[0]["public"]
    assert api.backend.names[f"private-replica-{HOST}"] == nodes[1]["private"]
    assert api.call("GET", f"/v2/databases/{cluster['id']}")["database"] == cluster


def test_a_new_config_is_digitaloceans_defaults(api):
    cluster = online(api)
    assert api.call("GET", f"/v2/databases/{cluster['id']}/config") == {
        "config": {
            "valkey_maxmemory_policy": "noeviction",
            "valkey_ssl": True,
            "valkey_timeout": 300,
            "valkey_lfu_log_factor": 10,
            "valkey_lfu_decay_time": 1,
            "valkey_notify_keyspace_events": "",
            "valkey_persistence": "rdb",
            "valkey_acl_channels_default": "allchannels",
            "valkey_io_threads": 1,
            "valkey_number_of_databases": 16,
            "valkey_pubsub_client_output_buffer_limit": 64,
            "frequent_snapshots": True,
            "valkey_active_expire_effort": 1,
        }
    }
    assert api.call("GET", f"/v2/databases/{cluster['id']}/eviction_policy") == {
        "eviction_policy": "noeviction"
    }


def test_the_providers_patch_is_kept_as_sent_and_applied_to_every_node(api):
    cluster = online(api)
    path = f"/v2/databases/{cluster['id']}/config"
    nodes = [n["id"] for n in api.account.databases.items[cluster["id"]]["nodes"]]
    # What the program sends for Sidekiq's cluster: the defaults, nothing to change.
    patch = {"config": {"valkey_ssl": True, "valkey_maxmemory_policy": "noeviction"}}
    assert send(api, "PATCH", path, patch) == (200, None)
    assert api.backend.configured == []
    # The cache cluster's: dashed, as the provider validates it.
    patch = {"config": {"valkey_ssl": True, "valkey_maxmemory_policy": "allkeys-lru"}}
    assert send(api, "PATCH", path, patch) == (200, None)
    assert api.backend.configured == [(n, {"maxmemory-policy": "allkeys-lru"}) for n in nodes]
    config = api.call("GET", path)["config"]
    assert config == {**DEFAULT_CONFIG, "valkey_maxmemory_policy": "allkeys-lru"}
    assert api.call("GET", f"/v2/databases/{cluster['id']}/eviction_policy") == {
        "eviction_policy": "allkeys_lru"
    }


def test_the_eviction_policy_endpoint_speaks_underscores_of_the_same_setting(api):
    cluster = online(api)
    path = f"/v2/databases/{cluster['id']}/eviction_policy"
    assert send(api, "PUT", path, {"eviction_policy": "volatile_ttl"}) == (204, None)
    assert api.backend.configured[-1][1] == {"maxmemory-policy": "volatile-ttl"}
    config = api.call("GET", f"/v2/databases/{cluster['id']}/config")["config"]
    assert config["valkey_maxmemory_policy"] == "volatile_ttl"
    assert api.call("GET", path) == {"eviction_policy": "volatile_ttl"}
    assert send(api, "PUT", path, {"eviction_policy": "volatile-ttl"})[0] == 422


def test_settings_reach_the_server_under_valkeys_names(api):
    cluster = online(api)
    changes = {
        "valkey_ssl": False,
        "valkey_timeout": 0,
        "valkey_persistence": "off",
        "valkey_pubsub_client_output_buffer_limit": 128,
        "valkey_number_of_databases": 4,
        "valkey_notify_keyspace_events": "Ex",
    }
    path = f"/v2/databases/{cluster['id']}/config"
    assert send(api, "PATCH", path, {"config": changes}) == (200, None)
    assert api.backend.configured[-1][1] == {
        "port": "25060",  # plain TCP opened, as DigitalOcean's Caching does without ssl
        "timeout": "0",
        "save": "",
        "client-output-buffer-limit": "pubsub 128mb 32mb 60",
        "databases": "4",
        "notify-keyspace-events": "Ex",
    }
    assert server_settings(api.call("GET", path)["config"], 2) == {
        **NEW_SETTINGS,
        **api.backend.configured[-1][1],
    }


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"valkey_maxmemory_policy": "allkeys-lfu"}, "valkey_maxmemory_policy"),
        ({"valkey_timeout": -1}, "valkey_timeout"),
        ({"valkey_io_threads": 33}, "valkey_io_threads"),
        ({"valkey_persistence": "aof"}, "valkey_persistence"),
        ({"valkey_ssl": "yes"}, "valkey_ssl"),
        ({"valkey_notify_keyspace_events": "Q"}, "valkey_notify_keyspace_events"),
        ({"sql_mode": "ANSI"}, "not a setting of valkey clusters"),
    ],
)
def test_a_config_valkey_has_not_is_refused_and_nothing_changes(api, config, words):
    cluster = online(api)
    path = f"/v2/databases/{cluster['id']}/config"
    status, document = send(api, "PATCH", path, {"config": config})
    assert status == 422 and words in document["message"]
    assert api.call("GET", path) == {"config": DEFAULT_CONFIG}
    assert api.backend.configured == []


def test_the_config_waits_for_an_online_cluster(api):
    api.account.backend.create_host = lambda *args: time.sleep(1)
    _, created = create(api)
    path = f"/v2/databases/{created['database']['id']}/config"
    status, document = send(api, "PATCH", path, {"config": {"valkey_ssl": True}})
    assert status == 412 and "creating" in document["message"]


@pytest.mark.parametrize(
    ("path", "method", "body", "words"),
    [
        ("dbs", "POST", {"name": "x"}, "Database management is not supported"),
        ("dbs", "GET", None, "Database management is not supported"),
        ("users", "POST", {"name": "x"}, "User management is not supported"),
        ("users/default", "GET", None, "User management is not supported"),
    ],
)
def test_what_valkey_has_not_is_refused_with_digitaloceans_note(api, path, method, body, words):
    cluster = online(api)
    status, document = send(api, method, f"/v2/databases/{cluster['id']}/{path}", body)
    assert status == 422 and document["message"].startswith(words)


def test_a_valkey_version_the_lab_has_not_is_refused(api):
    status, document = create(api, version="7")
    assert status == 422 and "valkey version '7' is not available" in document["message"]


def test_a_postgres_cluster_has_no_valkey_config(api):
    cluster = online(api, engine="pg", version="17", name="mastodon-data-t-pg")
    status, document = send(api, "GET", f"/v2/databases/{cluster['id']}/config")
    assert status == 422 and "valkey clusters only" in document["message"]


def test_trusted_sources_guard_both_valkey_ports_and_delete_leaves_no_node(api):
    cluster = online(api)
    nodes = api.account.databases.items[cluster["id"]]["nodes"]
    rules = [{"type": "ip_addr", "value": "10.118.0.0/20"}]
    path = f"/v2/databases/{cluster['id']}/firewall"
    assert send(api, "PUT", path, {"rules": rules}) == (204, None)
    own = [f"{n[side]}/32" for n in nodes for side in ("public", "private")]
    for node in nodes:
        assert api.backend.filters[node["id"]] == compile_trusted_sources(
            [*own, "10.118.0.0/20"], [25060, 25061]
        )
    assert "tcp dport { 25060, 25061 } drop" in api.backend.filters[nodes[0]["id"]]
    assert send(api, "DELETE", f"/v2/databases/{cluster['id']}") == (204, None)
    assert api.account.idle(10)
    assert sorted(api.backend.destroyed) == sorted(n["id"] for n in nodes)
    assert api.backend.names == {}
    assert send(api, "GET", f"/v2/databases/{cluster['id']}/config")[0] == 404
