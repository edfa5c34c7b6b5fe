"""The program on mocks with managed PostgreSQL, Spaces and Redis: the resources, their wiring
(pool on the cluster, firewalls on the cluster and on the replica's uuid, CDN origin = bucket
domain, key scoped to the bucket), and `mastodon_env` / `migration_env` key by key for every
mode x {replica, Spaces, Redis}. Expected values are written out here, not computed by env.py."""

from __future__ import annotations

import itertools

import pulumi
import pytest
from program_harness import (
    DO_CA_CERT,
    PG_USER_PASSWORD,
    SECRETS,
    SPACES_ACCESS_KEY,
    SPACES_SECRET_KEY,
    run_program,
)

from mastodon_data.config import ALL_SECRET_KEYS, SECRET_KEYS, ConfigError, parse_settings
from tests.fixtures import DROPLETS, HOSTS, MANAGED, SPACES, stack_file

APP = {"appTag": "mastodon-app", "appCidrs": ["203.0.113.50/32"]}
MODES = {
    "managed": {**MANAGED, **APP},
    "droplets": {**DROPLETS, **APP},
    "hosts": {**HOSTS, **APP},  # replicaCount: config_for
}
REDIS_URL = "rediss://default:external-secret@redis.example.net:6380"
VALKEY_HOST = "mastodon-data-unit-valkey-do-user-1.l.db.ondigitalocean.com"
# The mock's Valkey password "AVNS_valkeyPassword/4+5", percent-encoded in the URL.
VALKEY_PRIVATE_URL = f"rediss://default:AVNS_valkeyPassword%2F4%2B5@private-{VALKEY_HOST}:25061"
VALKEY_PUBLIC_URL = f"rediss://default:AVNS_valkeyPassword%2F4%2B5@{VALKEY_HOST}:25061"
PG_PRIVATE = "private-mastodon-data-unit-pg-do-user-1.l.db.ondigitalocean.com"


def config_for(mode: str, replica: bool, spaces: bool, redis: str) -> dict:
    config = dict(MODES[mode])
    if mode == "managed":
        config["managedReplica"] = replica
    else:
        config["replicaCount"] = 1 if replica else 0
    if spaces:
        config |= SPACES
    config["redisMode"] = redis
    return config


def secrets_for(mode: str, redis: str) -> dict:
    secrets = {} if mode == "managed" else dict(SECRETS)
    if redis == "external":
        secrets["redisUrl"] = REDIS_URL
    return secrets


def expected_database(mode: str, replica: bool, pooled: bool = True) -> dict:
    if mode == "managed":
        env = {
            "DB_HOST": "private-pool.l.db.ondigitalocean.com",
            "DB_PORT": "25061",
            "DB_NAME": "mastodon_pool",
            "DB_USER": "mastodon",
            "DB_PASS": PG_USER_PASSWORD,
            "DB_SSLMODE": "require",
            "PREPARED_STATEMENTS": "false",
        }
        if replica:
            env |= {
                "REPLICA_DB_HOST": "private-replica.l.db.ondigitalocean.com",
                "REPLICA_DB_PORT": "25060",
                "REPLICA_DB_NAME": "mastodon_production",  # the database, not the pool
                "REPLICA_DB_USER": "mastodon",
                "REPLICA_DB_PASS": PG_USER_PASSWORD,
                "REPLICA_PREPARED_STATEMENTS": "true",
            }
        return env
    primary, second = (
        ("10.118.0.2", "10.118.0.3") if mode == "droplets" else ("10.0.0.1", "10.0.0.2")
    )
    # PgBouncer on every host (the default): both through a pool, no prepared statements.
    port = "6432" if pooled else "5432"
    env = {
        "DB_HOST": primary,
        "DB_PORT": port,
        "DB_NAME": "mastodon_production",
        "DB_USER": "mastodon",
        "DB_PASS": SECRETS["dbPassword"],
        "DB_SSLMODE": "require",
    }
    if pooled:
        env["PREPARED_STATEMENTS"] = "false"
    if replica:
        env |= {
            "REPLICA_DB_HOST": second,
            "REPLICA_DB_PORT": port,
            # Through the pool: its read database (the replica's own server), not DB_NAME's.
            "REPLICA_DB_NAME": "mastodon_production_replica" if pooled else "mastodon_production",
            "REPLICA_DB_USER": "mastodon",
            "REPLICA_DB_PASS": SECRETS["dbPassword"],
        }
        if pooled:
            env["REPLICA_PREPARED_STATEMENTS"] = "false"
    return env


def expected_redis(mode: str, redis: str) -> dict:
    if redis == "none":
        return {}
    if redis == "external":
        url = REDIS_URL
    else:  # hosts mode has no VPC of the stack: the public hostname
        url = VALKEY_PUBLIC_URL if mode == "hosts" else VALKEY_PRIVATE_URL
    return {"REDIS_URL": url, "REDIS_DRIVER": "ruby"}


def expected_s3(spaces: bool) -> dict:
    if not spaces:
        return {}
    return {
        "S3_ENABLED": "true",
        "S3_BUCKET": "mastodon-media-test",
        "S3_REGION": "nyc3",
        "S3_PROTOCOL": "https",
        "S3_HOSTNAME": "nyc3.digitaloceanspaces.com",
        "S3_ENDPOINT": "https://nyc3.digitaloceanspaces.com",
        "S3_ALIAS_HOST": "mastodon-media-test.nyc3.cdn.digitaloceanspaces.com",
        "S3_PERMISSION": "public-read",
        "AWS_ACCESS_KEY_ID": SPACES_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SPACES_SECRET_KEY,
    }


def expected_migration(mode: str) -> dict:
    host, port = {
        "managed": (PG_PRIVATE, "25060"),
        "droplets": ("10.118.0.2", "5432"),
        "hosts": ("10.0.0.1", "5432"),
    }[mode]
    return {
        "DB_HOST": host,
        "DB_PORT": port,
        "DB_NAME": "mastodon_production",
        "PREPARED_STATEMENTS": "true",
    }


def expected_postgres(mode: str, replica: bool, pooled: bool = True) -> dict:
    """The same keys in every mode: a pipeline reads them whatever runs PostgreSQL."""
    if mode == "managed":
        pool = {
            "name": "mastodon_pool",
            "private_host": "private-pool.l.db.ondigitalocean.com",
            "port": 25061,
            "size": 50,
            "mode": "transaction",
        }
        primary, port = PG_PRIVATE, 25060
        second, replica_pool = "private-replica.l.db.ondigitalocean.com", None
    else:
        port = 5432
        primary, second = (
            ("10.118.0.2", "10.118.0.3") if mode == "droplets" else ("10.0.0.1", "10.0.0.2")
        )
        # 2 Puma processes x 5 threads + 25 Sidekiq threads + 10 streaming (the defaults).
        pool = {
            "name": "mastodon_production",
            "private_host": primary,
            "port": 6432,
            "size": 45,
            "mode": "transaction",
        }
        pool, replica_pool = (pool, 6432) if pooled else (None, None)
    return {
        "private_host": primary,
        "port": port,
        "database": "mastodon_production",
        "user": "mastodon",
        "pool": pool,
        "replica": (
            {"private_host": second, "port": port, "pool_port": replica_pool} if replica else None
        ),
    }


COMBINATIONS = list(
    itertools.product(("managed", "droplets", "hosts"), (False, True), (False, True),
                      ("none", "managed", "external"))
)  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "replica", "spaces", "redis"),
    COMBINATIONS,
    ids=[
        f"{m}-{'replica' if r else 'primary'}-{'spaces' if s else 'nospaces'}-redis_{x}"
        for m, r, s, x in COMBINATIONS
    ],
)
def test_mastodon_env_and_migration_env_for_every_combination(mode, replica, spaces, redis):
    run = run_program(config_for(mode, replica, spaces, redis), secrets_for(mode, redis))
    env = run.outputs["mastodon_env"]
    expected = expected_database(mode, replica) | expected_redis(mode, redis) | expected_s3(spaces)
    for key in sorted(set(env) | set(expected)):
        assert env.get(key) == expected.get(key), key
    assert run.outputs["migration_env"] == expected_migration(mode)
    assert run.outputs["postgres"] == expected_postgres(mode, replica)
    assert "mastodon_env" in run.secret_outputs
    # The alert rules are for the stack's own servers (droplets, hosts).
    assert ("alert_rules" in run.outputs) is (mode != "managed")
    assert not {"DATABASE_URL", "REPLICA_DATABASE_URL", "REDIS_NAMESPACE"} & set(env)
    # The services exist exactly when asked for, in any mode.
    assert len(run.of_type("/spacesBucket:SpacesBucket")) == int(spaces)
    valkeys = [
        c for c in run.of_type("/databaseCluster:DatabaseCluster") if c.name == "redis-cluster"
    ]
    assert len(valkeys) == int(redis == "managed")


@pytest.mark.parametrize("mode", ["droplets", "hosts"])
@pytest.mark.parametrize("replica", [False, True])
def test_without_pgbouncer_mastodon_connects_directly(mode, replica):
    config = config_for(mode, replica, False, "none") | {"pgbouncer": False}
    run = run_program(config, secrets_for(mode, "none"))
    assert run.outputs["mastodon_env"] == expected_database(mode, replica, pooled=False)
    assert run.outputs["migration_env"] == expected_migration(mode)
    assert run.outputs["postgres"] == expected_postgres(mode, replica, pooled=False)
    assert not [c for c in run.of_type("remote:Command") if "pooler" in c.name]


@pytest.fixture(scope="module")
def full():
    """Managed PostgreSQL with a replica, Spaces with a custom CDN domain, managed Valkey."""
    config = config_for("managed", True, True, "managed") | {
        "appDropletIds": ["4242"],
        "dbClusterSize": "db-s-4vcpu-8gb",
        "poolSize": 150,
        "postgresVersion": 15,
        "cdnCustomDomain": "media.example.social",
        "cdnDnsDomain": "example.social",
        "corsOrigins": ["https://example.social"],
        "redisNodeCount": 2,
    }
    return run_program(config, {})


RULES = [
    {"type": "tag", "value": "mastodon-app"},
    {"type": "droplet", "value": "4242"},
    {"type": "ip_addr", "value": "203.0.113.50/32"},
]


def test_managed_cluster_with_standby_in_the_vpc(full):
    (vpc,) = full.of_type("/vpc:Vpc")
    assert vpc.inputs == {
        "name": "mastodon-data-unit",
        "region": "nyc3",
        "ipRange": "10.118.0.0/20",
    }
    cluster = full.one("/databaseCluster:DatabaseCluster", "postgres-cluster")
    assert cluster.inputs == {
        "name": "mastodon-data-unit-pg",
        "engine": "pg",
        "version": "15",
        "size": "db-s-4vcpu-8gb",
        "region": "nyc3",
        "nodeCount": 2,
        "privateNetworkUuid": "network-vpc-id",
    }
    assert not full.of_type("/droplet:Droplet") and not full.of_type("remote:Command")


def test_database_role_and_transaction_pool_on_the_cluster(full):
    db = full.one("/databaseDb:DatabaseDb")
    user = full.one("/databaseUser:DatabaseUser")
    assert db.inputs == {"clusterId": "postgres-cluster-id", "name": "mastodon_production"}
    assert user.inputs == {"clusterId": "postgres-cluster-id", "name": "mastodon"}
    pool = full.one("/databaseConnectionPool:DatabaseConnectionPool")
    assert pool.inputs == {
        "clusterId": "postgres-cluster-id",
        "name": "mastodon_pool",
        "mode": "transaction",
        "size": 150,
        "dbName": "mastodon_production",
        "user": "mastodon",
    }


def test_replica_and_firewalls_on_cluster_and_replica_uuid(full):
    replica = full.one("/databaseReplica:DatabaseReplica")
    assert replica.inputs == {
        "clusterId": "postgres-cluster-id",
        "name": "mastodon-data-unit-pg-replica",
        "size": "db-s-4vcpu-8gb",
        "region": "nyc3",
        "privateNetworkUuid": "network-vpc-id",
    }
    firewalls = {f.name: f.inputs for f in full.of_type("/databaseFirewall:DatabaseFirewall")}
    assert firewalls == {
        "postgres-firewall": {"clusterId": "postgres-cluster-id", "rules": RULES},
        "postgres-replica-firewall": {"clusterId": "postgres-replica-uuid", "rules": RULES},
        "redis-firewall": {"clusterId": "redis-cluster-id", "rules": RULES},
    }


def test_valkey_in_the_vpc_with_noeviction_and_tls(full):
    cluster = full.one("/databaseCluster:DatabaseCluster", "redis-cluster")
    assert cluster.inputs == {
        "name": "mastodon-data-unit-valkey",
        "engine": "valkey",
        "version": "8",
        "size": "db-s-1vcpu-2gb",
        "region": "nyc3",
        "nodeCount": 2,
        "privateNetworkUuid": "network-vpc-id",
    }
    config = full.one("/databaseValkeyConfig:DatabaseValkeyConfig")
    assert config.inputs == {
        "clusterId": "redis-cluster-id",
        "valkeyMaxmemoryPolicy": "noeviction",
        "ssl": True,
    }


def test_spaces_bucket_cors_cdn_certificate_and_scoped_key(full):
    bucket = full.one("/spacesBucket:SpacesBucket")
    assert bucket.inputs == {"name": "mastodon-media-test", "region": "nyc3", "acl": "private"}
    cors = full.one("/spacesBucketCorsConfiguration:SpacesBucketCorsConfiguration")
    assert cors.inputs == {
        "bucket": "mastodon-media-test",
        "region": "nyc3",
        "corsRules": [
            {
                "allowedMethods": ["GET", "HEAD"],
                "allowedOrigins": ["https://example.social"],
                "allowedHeaders": ["*"],
                "maxAgeSeconds": 3000,
            }
        ],
    }
    certificate = full.one("/certificate:Certificate")
    assert certificate.inputs == {
        "name": "mastodon-data-unit-media",
        "type": "lets_encrypt",
        "domains": ["media.example.social"],
    }
    cdn = full.one("/cdn:Cdn")
    assert cdn.inputs == {
        "origin": "mastodon-media-test.nyc3.digitaloceanspaces.com",  # the bucket's domain
        "customDomain": "media.example.social",
        "certificateName": "mastodon-data-unit-media",
    }
    key = full.one("/spacesKey:SpacesKey")
    assert key.inputs == {
        "name": "mastodon-data-unit-media",
        "grants": [{"bucket": "mastodon-media-test", "permission": "readwrite"}],
    }
    env = full.outputs["mastodon_env"]
    assert env["S3_ALIAS_HOST"] == "media.example.social"


def test_existing_certificate_is_used_without_making_one():
    config = config_for("managed", False, True, "none") | {
        "cdnCustomDomain": "media.example.social",
        "cdnCertificateName": "media-example-social",
    }
    run = run_program(config, {})
    assert not run.of_type("/certificate:Certificate")
    assert run.one("/cdn:Cdn").inputs["certificateName"] == "media-example-social"


def test_every_named_resource_has_an_explicit_name(full):
    for resource in full.resources:
        if resource.typ.startswith("digitalocean:") and resource.typ.split(":")[-1] in (
            "Vpc",
            "DatabaseCluster",
            "DatabaseReplica",
            "DatabaseConnectionPool",
            "DatabaseUser",
            "DatabaseDb",
            "SpacesBucket",
            "SpacesKey",
            "Certificate",
        ):
            assert resource.inputs.get("name"), resource.name


def test_components_parent_their_resources(full):
    components = {r.typ for r in full.resources if r.typ.startswith("mastodon-data:index:")}
    assert components == {
        "mastodon-data:index:PrivateNetwork",
        "mastodon-data:index:ManagedPostgres",
        "mastodon-data:index:SpacesMedia",
        "mastodon-data:index:ManagedValkey",
    }


def test_plain_outputs_for_humans(full):
    assert full.outputs["postgres"] == {
        "private_host": PG_PRIVATE,
        "port": 25060,
        "database": "mastodon_production",
        "user": "mastodon",
        "pool": {
            "name": "mastodon_pool",
            "private_host": "private-pool.l.db.ondigitalocean.com",
            "port": 25061,
            "size": 150,
            "mode": "transaction",
        },
        "replica": {
            "private_host": "private-replica.l.db.ondigitalocean.com",
            "port": 25060,
            "pool_port": None,
        },
    }
    assert full.outputs["postgres_ca_cert"] == DO_CA_CERT
    assert full.outputs["vpc_id"] == "network-vpc-id"
    assert full.outputs["media"] == {
        "bucket": "mastodon-media-test",
        "region": "nyc3",
        "endpoint": "nyc3.digitaloceanspaces.com",
        "cdn_endpoint": "mastodon-media-test.nyc3.cdn.digitaloceanspaces.com",
        "alias_host": "media.example.social",
    }
    assert full.outputs["redis"] == {"host": f"private-{VALKEY_HOST}", "port": 25061}
    assert full.secret_outputs == {"mastodon_env", "postgres_admin"}
    assert full.outputs["postgres_admin"] == {
        "host": PG_PRIVATE,
        "port": 25060,
        "user": "doadmin",
        "password": "AVNS_doadminPassword",
    }
    for name, value in full.outputs.items():
        if name not in full.secret_outputs:
            for secret in (PG_USER_PASSWORD, SPACES_SECRET_KEY, "AVNS_valkeyPassword"):
                assert secret not in str(value), name


def test_droplets_mode_puts_valkey_in_the_droplets_vpc():
    run = run_program(config_for("droplets", True, False, "managed"))
    (vpc,) = run.of_type("/vpc:Vpc")
    assert vpc.name == "network-vpc"  # the stack's PrivateNetwork, as in managed mode
    assert run.one("/droplet:Droplet", "db-pg18-0").inputs["vpcUuid"] == "network-vpc-id"
    cluster = run.one("/databaseCluster:DatabaseCluster", "redis-cluster")
    assert cluster.inputs["privateNetworkUuid"] == "network-vpc-id"
    assert run.outputs["vpc_id"] == "network-vpc-id"


def test_hosts_mode_valkey_has_no_vpc_and_is_reached_by_its_public_name():
    run = run_program(config_for("hosts", True, False, "managed"))
    assert not run.of_type("/vpc:Vpc")
    cluster = run.one("/databaseCluster:DatabaseCluster", "redis-cluster")
    assert "privateNetworkUuid" not in cluster.inputs
    assert run.outputs["mastodon_env"]["REDIS_URL"] == VALKEY_PUBLIC_URL
    assert "vpc_id" not in run.outputs


def test_external_redis_url_is_a_secret_input_and_makes_no_cluster():
    run = run_program(config_for("managed", False, False, "external"), {"redisUrl": REDIS_URL})
    assert len(run.of_type("/databaseCluster:DatabaseCluster")) == 1
    assert run.outputs["mastodon_env"]["REDIS_URL"] == REDIS_URL


def test_managed_mode_needs_no_ssh_or_replication_secret():
    run = run_program(config_for("managed", False, False, "none"), {})
    assert run.outputs["mastodon_env"]["DB_PASS"] == PG_USER_PASSWORD


@pytest.mark.parametrize(
    ("config", "secrets", "message"),
    [
        ({"postgresMode": "managed"}, {}, r"appTag = '': the managed databases need"),
        (
            {"postgresMode": "managed", **APP, "poolSize": 98},
            {},
            r"poolSize = 98: larger than db-s-2vcpu-4gb allows: 97",
        ),
        (
            {"postgresMode": "managed", **APP, "managedReplicaRegion": "sfo3"},
            {},
            r"managedReplicaRegion = 'sfo3': not the stack's region nyc3",
        ),
        (
            {"postgresMode": "managed", **APP, "dbClusterSize": "large"},
            {},
            r"dbClusterSize = 'large': not a database size slug",
        ),
        (
            {**MODES["managed"], **SPACES, "cdnCustomDomain": "media.example.social"},
            {},
            r"cdnCustomDomain = 'media.example.social': a custom CDN domain needs a certificate",
        ),
        (
            {**MODES["managed"], "redisMode": "external"},
            {},
            r"pulumi config set --secret mastodon-data:redisUrl",
        ),
        (
            {**MODES["managed"], "redisMode": "external"},
            {"redisUrl": "redis://default:pw@10.0.0.5:6379"},
            r"redisUrl = \[secret\]: redis:// sends the password",
        ),
    ],
    ids=[
        "no-app-source",
        "pool-too-large",
        "replica-region",
        "size-slug",
        "cdn-no-certificate",
        "redis-url-missing",
        "redis-url-plain",
    ],
)
def test_bad_input_stops_the_program_before_any_resource(config, secrets, message):
    with pytest.raises(pulumi.RunError, match=message) as caught:
        run_program(config, secrets)
    assert "pw@" not in str(caught.value)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_files_are_valid_and_hold_no_secret_in_clear(stack):
    raw, secrets = stack_file(stack)
    assert not set(raw) & set(ALL_SECRET_KEYS)
    assert not secrets  # set per deployment with `pulumi config set --secret`
    mode = raw["postgresMode"]
    settings = parse_settings(raw, set(SECRET_KEYS) if mode != "managed" else set())
    assert settings.mode == {"dev": "droplets", "prod": "managed"}[stack]


def test_prod_stack_is_the_seed_topology():
    raw, _ = stack_file("prod")
    run = run_program(raw, {})
    cluster = run.one("/databaseCluster:DatabaseCluster", "postgres-cluster")
    assert int(cluster.inputs["version"]) >= 15 and cluster.inputs["nodeCount"] >= 2
    assert cluster.inputs["region"] == "tor1"
    assert run.one("/databaseConnectionPool:DatabaseConnectionPool").inputs["mode"] == "transaction"
    assert run.one("/spacesBucket:SpacesBucket").inputs["region"] == "nyc3"  # as in the seed
    assert run.one("/cdn:Cdn").inputs["customDomain"] == "media.example.social"
    assert run.one("/databaseCluster:DatabaseCluster", "redis-cluster").inputs["engine"] == "valkey"
    assert set(run.outputs["mastodon_env"]) == {
        *("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASS", "DB_SSLMODE"),
        "PREPARED_STATEMENTS",
        *("REPLICA_DB_HOST", "REPLICA_DB_PORT", "REPLICA_DB_NAME", "REPLICA_DB_USER"),
        *("REPLICA_DB_PASS", "REPLICA_PREPARED_STATEMENTS", "REDIS_URL", "REDIS_DRIVER"),
        *("S3_ENABLED", "S3_BUCKET", "S3_REGION", "S3_PROTOCOL", "S3_HOSTNAME", "S3_ENDPOINT"),
        *("S3_ALIAS_HOST", "S3_PERMISSION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    }


def test_the_metrics_endpoints_of_every_node_are_exported():
    run = run_program(config_for("managed", False, False, "none") | {"dbNodeCount": 2}, {})
    host = "mastodon-data-unit-pg-do-user-1.l.db.ondigitalocean.com"
    assert run.outputs["prometheus_targets"] == [
        {
            "targets": [f"{host}:9273", f"replica-{host}:9273"],
            "labels": {"job": "do_postgres", "cluster": "mastodon-data-unit-pg",
                       "__scheme__": "https"},
        }
    ]  # fmt: skip
    assert "prometheus_basic_auth" not in run.outputs  # the account's: no API call at preview
    assert "prometheus_targets" not in run.secret_outputs


def test_monitoring_sources_are_refused_in_managed_mode_with_the_fix():
    config = config_for("managed", False, False, "none") | {"monitoringSources": ["10.118.5.0/24"]}
    with pytest.raises(ConfigError) as refused:
        parse_settings(config, set(secrets_for("managed", "none")))
    assert "monitoringSources = ['10.118.5.0/24']: managed mode runs no exporters" in str(
        refused.value
    )
    assert "pulumi config rm mastodon-data:monitoringSources" in str(refused.value)
