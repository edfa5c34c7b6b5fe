"""Redis for Mastodon (any mode): a DigitalOcean managed Valkey cluster (managed Redis was
discontinued) over TLS, eviction policy noeviction (Sidekiq loses jobs otherwise), firewalled
like the database; in the stack's VPC when it has one. With redisCache, a second one for
Mastodon's cache alone, evicting the least recently used keys when full (Mastodon's docs and its
Helm chart keep the cache apart from Sidekiq's queues for this)."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

from mastodon_data.components.lifecycle import keep_data
from mastodon_data.config import AppSources, RedisSettings
from mastodon_data.env import redis_url
from mastodon_data.naming import do_name

VALKEY_VERSION = "8"
# Sidekiq keeps its queues in Redis: evicting keys under memory pressure would drop jobs.
EVICTION_POLICY = "noeviction"
# A cache stays within its memory by dropping what was used longest ago.
CACHE_EVICTION_POLICY = "allkeys-lru"


class ManagedValkey(pulumi.ComponentResource):
    """`url`: a secret Output of the rediss:// URL Mastodon connects with; `output`: the stack
    output `redis` (host and port, no secret). `cache`: the cache's cluster (`<stack>-valkey-
    cache`, allkeys-lru) instead of the queues'."""

    def __init__(
        self,
        name: str,
        redis: RedisSettings,
        app_sources: AppSources,
        vpc_id: pulumi.Input[str] | None,
        protect: bool = True,
        opts: pulumi.ResourceOptions | None = None,
        cache: bool = False,
    ):
        super().__init__("mastodon-data:index:ManagedValkey", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.cluster = do.DatabaseCluster(
            f"{name}-cluster",
            name=f"{do_name('mastodon-data', pulumi.get_stack())}-valkey{'-cache' * cache}",
            engine="valkey",
            version=VALKEY_VERSION,
            size=redis.size,
            region=redis.region,
            node_count=redis.node_count,
            private_network_uuid=vpc_id,
            opts=keep_data(protect, child),  # Sidekiq's queues (or the cache) live here
        )
        # The engine-specific config is where Valkey takes its maxmemory policy (the cluster's
        # eviction_policy argument is checked as Redis-only by the Terraform provider).
        self.config = do.DatabaseValkeyConfig(
            f"{name}-config",
            cluster_id=self.cluster.id,
            valkey_maxmemory_policy=CACHE_EVICTION_POLICY if cache else EVICTION_POLICY,
            ssl=True,  # refuse connections without TLS
            opts=child,
        )
        self.firewall = do.DatabaseFirewall(
            f"{name}-firewall",
            cluster_id=self.cluster.id,
            rules=[do.DatabaseFirewallRuleArgs(**r) for r in app_sources.firewall_rules()],
            opts=child,
        )
        # Without a VPC of this stack (hosts mode) the app is elsewhere: the public hostname,
        # still TLS, password and firewall.
        self.host = self.cluster.private_host if vpc_id is not None else self.cluster.host
        self.url = pulumi.Output.secret(
            pulumi.Output.all(
                self.cluster.user, self.cluster.password, self.host, self.cluster.port
            ).apply(lambda a: redis_url(user=a[0], password=a[1], host=a[2], port=a[3]))
        )
        self.output = {"host": self.host, "port": self.cluster.port}
        self.register_outputs({"cluster_id": self.cluster.id, "host": self.host})
