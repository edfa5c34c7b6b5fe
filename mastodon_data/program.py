"""The Pulumi program: the stack's configuration -> its components -> the outputs a deploy
pipeline reads. PostgreSQL runs on droplets made here, on existing hosts, or managed by
DigitalOcean; media (Spaces and a CDN) and Redis (Valkey) may be added in every mode.

A project runs it from its `__main__.py`, this repository's as an operator's:

    from mastodon_data.program import run

    run()
"""

from __future__ import annotations

import dataclasses
import functools

import pulumi

from mastodon_data import cert_renewal, components, monitoring, outputs, stack_config
from mastodon_data.config import REDIS_URL_KEY, SLACK_URL_KEY, Settings
from mastodon_data.naming import generation_name, tier_name


def run() -> None:
    """The whole program, in the order the engine meets it."""
    # Configuration: every setting checked at once; any problem stops here, with its fix.
    settings, secrets, reseed = stack_config.load()
    cert_renewal.start_early(settings)  # hosts mode: the SSH checks overlap the imports below
    mode, protect = settings.mode, settings.lifecycle.protect_data

    # Components: one VPC per stack (hosts mode has none), PostgreSQL, media, Redis.
    network = components.PrivateNetwork("network", settings.network) if mode != "hosts" else None
    vpc_id = network.vpc.id if network else None
    repository = None
    if mode == "managed":
        postgres = components.ManagedPostgres(
            "postgres", settings.managed, settings.app_sources, vpc_id, settings.lifecycle
        )
        alert_policies("postgres-alerts", settings, [postgres.cluster.id], secrets)
        pulumi.export("prometheus_targets", postgres.targets)  # DigitalOcean's endpoints
    else:
        postgres, repository, secrets = replicated_postgres(settings, network, secrets, reseed)
        # The rules for the operator's Prometheus, filled in with this stack's values.
        pulumi.export("alert_rules", monitoring.render_rules(settings.replication, settings.alerts))
        if settings.replication.monitoring_sources:  # its exporters, for Prometheus's file_sd
            pulumi.export("prometheus_targets", postgres.targets)
    media = components.SpacesMedia("media", settings.spaces, protect) if settings.spaces else None
    valkey = cache = None
    if settings.redis and settings.redis.mode == "managed":
        valkey = components.ManagedValkey(
            "redis", settings.redis, settings.app_sources, vpc_id, protect
        )
        if settings.redis.cache:
            cache = components.ManagedValkey(
                "redis-cache", settings.redis, settings.app_sources, vpc_id, protect, cache=True
            )

    # Exports: PostgreSQL's the same in every mode, then what the mode and the options add.
    export_postgres(mode, postgres, repository)
    if network:
        pulumi.export("vpc_id", network.vpc.id)
    if media:
        pulumi.export("media", media.output)
    if valkey:
        pulumi.export("redis", valkey.output)
    if cache:
        pulumi.export("redis_cache", cache.output)
    redis_url = valkey.url if valkey else secrets.get(REDIS_URL_KEY)
    export_mastodon_env(postgres, redis_url, media.storage if media else None, cache)


def replicated_postgres(settings: Settings, network, secrets: dict, reseed: frozenset[str]):
    """Droplets and hosts mode: the servers (droplets made here, or the existing hosts), the
    backup repository, the replication steps on the servers (both generations' during a
    blue/green upgrade) and the admin keys. Returns (what Mastodon is served by, the repository
    or None, the secrets with the repository's key added)."""
    upgrade = settings.upgrade
    tiers = droplet_tiers(settings, network) if settings.droplets else {}
    tier = tiers.get("new")
    if tiers:
        every_droplet = [d.id for t in tiers.values() for d in t.droplets]
        alert_policies("db-alerts", settings, every_droplet, secrets)
    repository, secrets = components.BackupRepository.with_key("backups", settings.backups, secrets)
    generation = functools.partial(
        replication_steps, secrets=secrets, reseed=reseed, hosts_outlive_stack=not tiers
    )
    hosts = tier.hosts if tier else settings.hosts
    # Backups stay with the old generation until it is retired (docs/operators/major-upgrade.md)
    postgres = generation(settings.replication, hosts, settings.backups if not upgrade else None,
                          legacy_name=not upgrade,
                          read_address=read_address(settings.replication, tier))  # fmt: skip
    served_hosts, served_tier = hosts, tier
    if upgrade:
        postgres, served_hosts = blue_green(settings, upgrade, generation, postgres, secrets, tiers)
        served_tier = tiers.get(upgrade.serve)
    export_read_endpoint(settings.replication, served_tier, served_hosts)
    for name, servers in admin_key_groups(settings, tiers):  # rotated without a new droplet
        components.AuthorizedKeys(name, settings.lifecycle.authorized_keys, servers, secrets)
    return postgres, repository, secrets


def export_read_endpoint(replication, tier, hosts) -> None:
    """The read endpoint over the replicas of the side that serves: `tier`'s load balancer
    (droplets mode), else HAProxy's configuration over `hosts` (hosts mode)."""
    if tier and tier.read_endpoint:
        endpoint, health = tier.read_endpoint, replication.replica_health_port
        pulumi.export(
            "read_endpoint",
            endpoint.address.apply(
                lambda a: outputs.read_endpoint_output(a, endpoint.port, health)
            ),
        )
    elif not tier and replication.replica_count:  # hosts: the operator's HAProxy
        pulumi.export("read_endpoint_haproxy", haproxy_config(replication, hosts))


def admin_key_groups(settings: Settings, tiers: dict) -> list[tuple[str, tuple]]:
    """authorizedKeys: every server's (hosts mode: of both generations); in droplets mode one
    group per tier, as both name their droplets db-0, db-1 ..."""
    upgrade = settings.upgrade
    if not settings.lifecycle.authorized_keys:
        return []
    if not tiers:
        return [("admin-keys", (*settings.hosts, *(upgrade.hosts if upgrade else ())))]
    groups = [("admin-keys", tuple(tiers.get("old", tiers["new"]).hosts))]
    if upgrade:
        version = settings.replication.postgres_version
        groups.append((f"admin-keys-pg{version}", tuple(tiers["new"].hosts)))
    return groups


def droplet_tiers(settings: Settings, network) -> dict:
    """Droplets mode: the tier of droplets named after its version ("new"), which also answers
    to the name tiers had before generations; during a blue/green upgrade the old one too
    ("old", keeping that alias; without protectData once `retire` is set), each firewall
    letting the other tier's nodes in."""
    droplets, lifecycle, upgrade = settings.droplets, settings.lifecycle, settings.upgrade
    version = settings.replication.postgres_version
    legacy = pulumi.ResourceOptions(aliases=[pulumi.Alias(name="db")])
    if not upgrade:
        tier = components.DropletTier(tier_name(version), droplets, network, lifecycle, legacy)
        tier.guard()
        return {"new": tier}
    leaving = dataclasses.replace(
        lifecycle, protect_data=lifecycle.protect_data and not upgrade.retire
    )
    old = components.DropletTier(
        tier_name(upgrade.postgres_version), droplets, network, leaving, legacy, warn=False
    )
    new = components.DropletTier(
        tier_name(version), droplets, network, lifecycle, suffix=f"-pg{version}"
    )
    old.guard((new,))
    new.guard((old,))
    return {"old": old, "new": new}


def replication_steps(replication, hosts, backups, *, legacy_name: bool, **options):
    """One generation's steps, named after its version; the stack's only generation (or the
    old one of an upgrade) also answers to the name all steps had before generations."""
    aliases = [pulumi.Alias(name="replication")] if legacy_name else None
    return components.ReplicationSteps(
        generation_name(replication.postgres_version), replication, hosts,
        options.pop("secrets"), options.pop("reseed"), pulumi.ResourceOptions(aliases=aliases),
        backups=backups, **options,
    )  # fmt: skip


def blue_green(settings: Settings, upgrade, generation, new, secrets: dict, tiers: dict):
    """During a blue/green upgrade: the old generation's steps, the run that moves Mastodon's
    writes to the side `serve` names, and that side's steps and servers, once the run is
    done. `tiers`: both generations' droplets (droplets mode), else none (hosts mode)."""
    old_hosts = tuple(tiers["old"].hosts) if tiers else upgrade.hosts
    new_hosts = tuple(tiers["new"].hosts) if tiers else settings.hosts
    old_replication = dataclasses.replace(
        settings.replication,
        postgres_version=upgrade.postgres_version,
        replica_count=len(old_hosts) - 1,
    )
    old = generation(old_replication, old_hosts, settings.backups, legacy_name=True,
                     read_address=read_address(old_replication, tiers.get("old")))  # fmt: skip
    sides = {
        "old": (old_replication, old_hosts, old),
        "new": (settings.replication, tuple(h for h in new_hosts if h.role != "spare"), new),
    }
    run = components.BlueGreenUpgrade("postgres-upgrade", upgrade, sides, secrets)
    pulumi.export("upgrade", run.report)
    if settings.backups:  # where `mastodon-data backups` finds them until the retirement
        pulumi.export("backup_primary", old.primary)
    served = old if upgrade.serve == "old" else new
    return ServedBy(served, run.report), sides[upgrade.serve][1]


class ServedBy:
    """A generation's outputs as the exports read them, once the upgrade's run is done (the
    env names the side it moved Mastodon's writes to)."""

    def __init__(self, side, done: pulumi.Output):
        self.endpoints = pulumi.Output.all(side.endpoints, done).apply(lambda a: a[0])
        self.ca_cert = pulumi.Output.all(side.ca_cert, done).apply(lambda a: a[0])
        self.password, self.status, self.targets = side.password, side.status, side.targets
        self.primary, self.replicas = side.primary, side.replicas


def alert_policies(name: str, settings: Settings, entities: list, secrets: dict) -> None:
    """DigitalOcean's CPU, memory and disk policies over `entities`, when a destination is set."""
    if settings.alert_policies:
        managed = settings.mode == "managed"
        slack_url = secrets.get(SLACK_URL_KEY)
        components.AlertPolicies(name, settings.alert_policies, entities, managed, slack_url)


def read_address(replication, tier):
    """Mastodon's REPLICA_DB_HOST when a read endpoint serves the replicas (replicaLoadBalancer):
    `tier`'s load balancer (droplets), HAProxy on each app server (hosts); else None."""
    if tier:
        return tier.read_endpoint.address if tier.read_endpoint else None
    return "127.0.0.1" if replication.replica_load_balancer else None


def haproxy_config(replication, hosts) -> str:
    """Hosts mode: HAProxy's read endpoint over the stack's servers."""
    port = replication.pool.pgbouncer_port if replication.pool else replication.port
    servers = [h for h in hosts if h.role != "spare"]
    return outputs.haproxy_read_config(servers, port, replication.replica_health_port)


def export_postgres(mode: str, postgres, repository) -> None:
    pulumi.export("postgres", postgres.endpoints.apply(outputs.postgres_output))
    pulumi.export("postgres_ca_cert", postgres.ca_cert)
    if mode == "managed":
        pulumi.export("postgres_admin", postgres.admin)  # secret; for `mastodon-data grant`
        return
    pulumi.export("primary", postgres.primary)
    pulumi.export("replicas", postgres.replicas)
    pulumi.export("replication", postgres.status)
    if repository:  # backup_key (secret): for `mastodon-data restore`
        pulumi.export("backups", repository.output)
        pulumi.export("backup_key", repository.key_output)


def export_mastodon_env(postgres, redis_url, storage, cache=None) -> None:
    """Mastodon's variables (secret as a whole) and the overrides of a direct migration."""
    cache_url = cache.url if cache else None
    env = pulumi.Output.all(postgres.endpoints, postgres.password, redis_url, storage, cache_url)
    pulumi.export("mastodon_env", pulumi.Output.secret(env.apply(lambda a: outputs.env_output(*a))))
    # No credential in it (host, port, name): plain in every mode, as the policy pack expects.
    migration = postgres.endpoints.apply(outputs.migration_output)
    pulumi.export("migration_env", pulumi.Output.unsecret(migration))
