"""The Valkey stack of tests/lab/test_valkey_standin.py: the project's own `ManagedValkey`
component twice, as the program makes them with redisMode managed and redisCache (Sidekiq's
queues with noeviction, Mastodon's cache with allkeys-lru), each with a standby, in a VPC;
unprotected, so the test can destroy it."""

import pulumi
import pulumi_digitalocean as do

from mastodon_data.components import ManagedValkey
from mastodon_data.config import AppSources, RedisSettings

config = pulumi.Config()
vpc = do.Vpc(
    "vpc", name=f"mlvk-{pulumi.get_stack()}-vpc", region="tor1", ip_range=config.require("vpcCidr")
)
redis = RedisSettings("managed", "db-s-1vcpu-2gb", 2, "tor1", cache=True)
sources = AppSources(tag=config.require("appTag"), cidrs=tuple(config.require_object("appCidrs")))
queues = ManagedValkey("redis", redis, sources, vpc.id, protect=False)
cache = ManagedValkey("redis-cache", redis, sources, vpc.id, protect=False, cache=True)

pulumi.export("redis_url", queues.url)
pulumi.export("cache_redis_url", cache.url)
pulumi.export("redis", queues.output)
pulumi.export("redis_cache", cache.output)
