"""The Pulumi program: configuration -> PostgreSQL (droplets, hosts or managed), object storage
and Redis -> outputs."""

import pulumi

from components import outputs, plan, stack_config
from components.config import REDIS_URL_KEY, ConfigError

try:
    settings, secrets, reseed = stack_config.load()
except ConfigError as problems:
    # A RunError is shown without a traceback: only the problems and their fixes.
    raise pulumi.RunError(f"invalid stack configuration:\n{problems}") from None
for warning in settings.warnings:
    pulumi.log.warn(warning)

vpc_id = None  # hosts mode has no VPC of this stack
if settings.mode == "managed":
    from components.managed_postgres import ManagedPostgres
    from components.network import PrivateNetwork

    vpc_id = PrivateNetwork("network", settings).vpc.id
    postgres = ManagedPostgres("postgres", settings, vpc_id)
else:
    from components.replication import ReplicationSteps

    if settings.mode == "droplets":
        from components.droplets import DropletTier

        tier = DropletTier("db", settings)
        nodes, vpc_id = tier.nodes, tier.vpc.id
    else:
        nodes = plan.nodes_from_hosts(settings)
    replication = ReplicationSteps(
        "replication", plan.steps(settings, nodes, reseed=reseed), secrets
    )

# Object storage and Redis: the same in every mode.
storage = None
if settings.spaces:
    from components.spaces import SpacesMedia

    media = SpacesMedia("media", settings.spaces)
    storage = media.storage
    pulumi.export(
        "media",
        {
            "bucket": media.bucket.name,
            "region": settings.spaces.region,
            "endpoint": media.bucket.endpoint,
            "cdn_endpoint": media.cdn.endpoint,
            "alias_host": media.alias_host,
        },
    )
redis = None
if settings.redis and settings.redis.mode == "managed":
    from components.redis import ManagedValkey

    valkey = ManagedValkey("redis", settings.redis, settings.region, settings.app_sources, vpc_id)
    redis = valkey.url
    pulumi.export("redis", {"host": valkey.host, "port": valkey.cluster.port})
elif settings.redis and settings.redis.mode == "external":
    redis = secrets[REDIS_URL_KEY]
if vpc_id is not None:
    pulumi.export("vpc_id", vpc_id)

if settings.mode == "managed":
    endpoints = postgres.endpoints
    pulumi.export("postgres", endpoints.apply(outputs.managed_postgres_output))
    pulumi.export("postgres_ca_cert", postgres.ca_cert)
    pulumi.export("postgres_admin", postgres.admin)
    env = pulumi.Output.all(endpoints, postgres.password, redis, storage).apply(
        lambda args: outputs.managed_env_output(*args)
    )
    migration = endpoints.apply(outputs.managed_migration_output)
else:
    # Addresses may be Outputs (droplets): resolve them, then map with the pure functions.
    resolved_nodes = pulumi.Output.all(
        *[[n.name, n.role, n.public_address, n.private_address] for n in nodes]
    ).apply(lambda rows: [plan.Node(*row) for row in rows])
    status = replication.status_stdout()
    ca_cert = replication.commands["primary"].stdout.apply(
        lambda out: plan.parse_report(out).get("ca_cert", "")
    )
    hosts = pulumi.Output.all(resolved_nodes, ca_cert, *status.values()).apply(
        lambda args: outputs.host_outputs(
            args[0], dict(zip(status, args[2:], strict=True)), args[1]
        )
    )
    for key in ("primary", "replicas", "replication", "postgres_ca_cert"):
        pulumi.export(key, hosts[key])
    env = pulumi.Output.all(resolved_nodes, secrets["dbPassword"], redis, storage).apply(
        lambda args: outputs.env_output(settings, *args)
    )
    migration = resolved_nodes.apply(lambda rows: outputs.migration_output(settings, rows))
pulumi.export("mastodon_env", pulumi.Output.secret(env))
# No credential in it (host, port, name): plain in every mode, as the policy pack expects.
pulumi.export("migration_env", pulumi.Output.unsecret(migration))
