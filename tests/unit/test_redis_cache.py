"""redisCache on mocks: off (the default), Mastodon's cache shares REDIS_URL and one Valkey
cluster is made; on, a second cluster with allkeys-lru is made beside Sidekiq's (noeviction),
firewalled alike, and emitted as CACHE_REDIS_URL. Expected values are written out here."""

from __future__ import annotations

import pytest
from program_harness import run_program

from tests.fixtures import MANAGED

CONFIG = {**MANAGED, "appTag": "mastodon-app", "redisMode": "managed", "redisNodeCount": 2}
# The mock's hosts and Valkey password "AVNS_valkeyPassword/4+5" (percent-encoded in URLs).
QUEUES_HOST = "private-mastodon-data-unit-valkey-do-user-1.l.db.ondigitalocean.com"
CACHE_HOST = "private-mastodon-data-unit-valkey-cache-do-user-1.l.db.ondigitalocean.com"
PASSWORD = "AVNS_valkeyPassword%2F4%2B5"


@pytest.fixture(scope="module")
def with_cache():
    return run_program({**CONFIG, "redisCache": True}, {})


def test_off_by_default_the_cache_shares_redis_url():
    run = run_program(CONFIG, {})
    clusters = sorted(c.name for c in run.of_type("/databaseCluster:DatabaseCluster"))
    assert clusters == ["postgres-cluster", "redis-cluster"]
    env = run.outputs["mastodon_env"]
    assert env["REDIS_URL"] == f"rediss://default:{PASSWORD}@{QUEUES_HOST}:25061"
    assert "CACHE_REDIS_URL" not in env
    assert "redis_cache" not in run.outputs


def test_the_cache_is_a_second_valkey_cluster_evicting_lru(with_cache):
    cluster = with_cache.one("/databaseCluster:DatabaseCluster", "redis-cache-cluster")
    assert cluster.inputs == {
        "name": "mastodon-data-unit-valkey-cache",
        "engine": "valkey",
        "version": "8",
        "size": "db-s-1vcpu-2gb",
        "region": "nyc3",
        "nodeCount": 2,
        "privateNetworkUuid": "network-vpc-id",
    }
    configs = {c.name: c.inputs for c in with_cache.of_type("DatabaseValkeyConfig")}
    assert configs == {
        "redis-config": {
            "clusterId": "redis-cluster-id",
            "valkeyMaxmemoryPolicy": "noeviction",
            "ssl": True,
        },
        "redis-cache-config": {
            "clusterId": "redis-cache-cluster-id",
            "valkeyMaxmemoryPolicy": "allkeys-lru",
            "ssl": True,
        },
    }
    firewall = with_cache.one("/databaseFirewall:DatabaseFirewall", "redis-cache-firewall")
    assert firewall.inputs == {
        "clusterId": "redis-cache-cluster-id",
        "rules": [{"type": "tag", "value": "mastodon-app"}],
    }


def test_the_cache_is_emitted_as_cache_redis_url_and_redis_url_keeps_the_queues(with_cache):
    env = with_cache.outputs["mastodon_env"]
    assert env["REDIS_URL"] == f"rediss://default:{PASSWORD}@{QUEUES_HOST}:25061"
    assert env["CACHE_REDIS_URL"] == f"rediss://default:{PASSWORD}@{CACHE_HOST}:25061"
    assert env["REDIS_DRIVER"] == "ruby"
    assert with_cache.outputs["redis_cache"] == {"host": CACHE_HOST, "port": 25061}
    assert "mastodon_env" in with_cache.secret_outputs
    assert "redis_cache" not in with_cache.secret_outputs


def test_the_caches_cluster_is_protected_like_every_cluster(with_cache):
    assert with_cache.protected["redis-cache-cluster"] is True
    assert with_cache.protected["redis-cluster"] is True
