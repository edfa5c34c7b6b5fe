"""The Pulumi program: the stack's configuration -> its components -> the outputs a deploy
pipeline reads. PostgreSQL runs on droplets made here, on existing hosts, or managed by
DigitalOcean; media (Spaces and a CDN) and Redis (Valkey) may be added in every mode."""

import pulumi

from mastodon_data import cert_renewal, components, outputs, stack_config
from mastodon_data.config import REDIS_URL_KEY

# Configuration: every setting checked at once; any problem stops here, with its fix.
settings, secrets, reseed = stack_config.load()
cert_renewal.start_early(settings)  # hosts mode: the SSH checks overlap the imports below
mode, redis = settings.mode, settings.redis

# Components: one VPC per stack (hosts mode has none), PostgreSQL, media, Redis.
network = components.PrivateNetwork("network", settings.network) if mode != "hosts" else None
vpc_id = network.vpc.id if network else None
if mode == "managed":
    postgres = components.ManagedPostgres(
        "postgres", settings.managed, settings.app_sources, vpc_id, settings.lifecycle
    )
else:
    droplets = settings.droplets
    tier = components.DropletTier("db", droplets, network, settings.lifecycle) if droplets else None
    hosts = tier.hosts if tier else settings.hosts
    repository, secrets = components.BackupRepository.with_key("backups", settings.backups, secrets)
    postgres = components.ReplicationSteps(
        "replication",
        settings.replication,
        hosts,
        secrets,
        reseed,
        hosts_outlive_stack=not tier,
        backups=settings.backups,
    )
    if settings.lifecycle.authorized_keys:  # admin keys, rotated without a new droplet
        components.AuthorizedKeys("admin-keys", settings.lifecycle.authorized_keys, hosts, secrets)
protect = settings.lifecycle.protect_data
media = components.SpacesMedia("media", settings.spaces, protect) if settings.spaces else None
valkey = None
if redis and redis.mode == "managed":
    valkey = components.ManagedValkey("redis", redis, settings.app_sources, vpc_id, protect)
redis_url = valkey.url if valkey else secrets.get(REDIS_URL_KEY)

# Exports: PostgreSQL's the same in every mode, then what the mode and the options add.
pulumi.export("postgres", postgres.endpoints.apply(outputs.postgres_output))
pulumi.export("postgres_ca_cert", postgres.ca_cert)
if mode == "managed":
    pulumi.export("postgres_admin", postgres.admin)  # secret; for `mastodon-data grant`
else:
    pulumi.export("primary", postgres.primary)
    pulumi.export("replicas", postgres.replicas)
    pulumi.export("replication", postgres.status)
    if repository:  # backup_key (secret): for `mastodon-data restore`
        pulumi.export("backups", repository.output)
        pulumi.export("backup_key", repository.key_output)
if network:
    pulumi.export("vpc_id", network.vpc.id)
if media:
    pulumi.export("media", media.output)
if valkey:
    pulumi.export("redis", valkey.output)
storage = media.storage if media else None
env = pulumi.Output.all(postgres.endpoints, postgres.password, redis_url, storage)
pulumi.export("mastodon_env", pulumi.Output.secret(env.apply(lambda a: outputs.env_output(*a))))
# No credential in it (host, port, name): plain in every mode, as the policy pack expects.
migration = postgres.endpoints.apply(outputs.migration_output)
pulumi.export("migration_env", pulumi.Output.unsecret(migration))
