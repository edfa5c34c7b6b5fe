"""mastodon_data/config: valid stacks parse to the expected Settings; every bad value is named,
shown and given a fix; secrets never appear in a message."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from mastodon_data.config import (
    DEFAULTS,
    PROJECT,
    SECRET_KEYS,
    TYPES,
    ConfigError,
    access,
    backups,
    connection_limit,
    lifecycle,
    managed,
    media,
    monitoring,
    parse_settings,
    pooling,
    read_endpoint,
    records,
    redis,
    secret_problems,
    topology,
)
from tests.fixtures import DROPLETS, HOST_KEY, MANAGED, ssh_string
from tests.fixtures import SPACES as MEDIA
from tests.fixtures import VARIED_HOSTS as HOSTS
from tests.fixtures import with_host as fixtures_with_host

ROOT = Path(__file__).resolve().parents[2]
ALL_SECRETS = frozenset(SECRET_KEYS)
SPACES = {**MANAGED, **MEDIA}
CDN = {**SPACES, "cdnCustomDomain": "media.example.social"}


def problems(raw: dict[str, Any], secrets: frozenset[str] = ALL_SECRETS) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw, secrets)
    return str(caught.value).splitlines()


def with_host(index: int, **changes: Any) -> dict[str, Any]:
    return fixtures_with_host(HOSTS, index, **changes)


def test_valid_droplets_config() -> None:
    settings = parse_settings(
        {**DROPLETS, "replicaCount": "2", "region": "fra1", "image": "debian-12-x64"}, ALL_SECRETS
    )
    assert settings == records.Settings(
        mode="droplets",
        network=records.NetworkSettings(region="fra1", cidr="10.118.0.0/20"),
        replication=records.ReplicationSettings(
            postgres_version=18,
            db_name="mastodon_production",
            db_user="mastodon",
            replication_user="replicator",
            postgres_allowed_sources=("10.118.0.0/20",),
            wal_keep_size="1GB",
            max_slot_wal_keep_size="10GB",
            replication_timeout="10s",
            wal_retrieve_retry_interval="1s",
            replica_count=2,
            port=5432,
            max_connections=100,
            # 2 Puma processes x 5 threads + 25 Sidekiq threads + 10 streaming connections.
            pool=records.PoolSettings(
                pgbouncer_port=6432,
                size=45,
                pgbouncer_max_client_conn=1000,
                pgbouncer_open_files=4096,
            ),
            replica_load_balancer=True,  # auto: droplets mode with 2 replicas
        ),
        droplets=records.DropletSettings(
            image="debian-12-x64",
            primary_size="s-2vcpu-4gb",
            replica_size="s-2vcpu-4gb",
            replica_count=2,
            ssh_key_ids=("12345",),
            ssh_user="root",
            admin_cidrs=("198.51.100.7/32",),
            postgres_allowed_sources=("10.118.0.0/20",),
            port=5432,
            pool=records.PoolSettings(
                pgbouncer_port=6432,
                size=45,
                pgbouncer_max_client_conn=1000,
                pgbouncer_open_files=4096,
            ),
            replica_load_balancer=True,
        ),
        hosts=(),
    )


def test_valid_hosts_config() -> None:
    settings = parse_settings(HOSTS, ALL_SECRETS)
    assert settings.mode == "hosts"
    assert settings.replication.replica_count == 1
    assert settings.replication.postgres_allowed_sources == ("10.0.0.0/24",)
    assert settings.droplets is None and settings.managed is None
    assert settings.hosts == (
        # the host key without its comment
        records.Host("db-a", "primary", "203.0.113.10", "10.0.0.10", "root", 22, HOST_KEY),
        records.Host("host1", "replica", "db2.example.net", "10.0.0.11", "admin", 2222, None),
        records.Host("spare", "spare", "203.0.113.12", "10.0.0.12", "root", 22, None),
    )


def test_allowed_sources_default_to_the_vpc() -> None:
    settings = parse_settings({**HOSTS, "postgresAllowedSources": []}, ALL_SECRETS)
    assert settings.replication.postgres_allowed_sources == ("10.118.0.0/20",)


@pytest.mark.parametrize(
    "size",
    [
        "s-2vcpu-4gb",
        "s-1vcpu-512mb-10gb",
        "c-4",
        "g-2vcpu-8gb",
        "m-2vcpu-16gb",
        "so-2vcpu-16gb",
        "gd-2vcpu-8gb",
        "s-4vcpu-8gb-amd",
        "s-2vcpu-4gb-intel",
        "so1_5-2vcpu-16gb",
        "c2-4vcpu-8gb",
    ],
)
def test_size_slugs_accepted(size: str) -> None:
    assert (
        parse_settings({**DROPLETS, "primarySize": size}, ALL_SECRETS).droplets.primary_size == size
    )


def test_defaults_equal_pulumi_yaml() -> None:
    try:
        project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    except yaml.YAMLError as error:  # Pulumi's own loader refuses it the same way
        pytest.fail(f"Pulumi.yaml is not valid YAML (quote values that contain ': '): {error}")
    assert {key: spec["default"] for key, spec in project["config"].items()} == DEFAULTS


def test_every_setting_of_pulumi_yaml_is_described_once() -> None:
    domains = (topology, pooling, read_endpoint, managed, access, media, redis, backups, lifecycle)
    domains += (monitoring,)
    fields = [f for domain in domains for f in domain.FIELDS]
    assert sorted(f.key for f in fields) == sorted(TYPES)  # each once, none left out
    for field in fields:
        assert (field.allowed is not None) == (TYPES[field.key] == "integer"), field.key
        assert TYPES[field.key] in ("string", "integer", "boolean", "array"), field.key
        assert DEFAULTS[field.key] is not None, f"{field.key}: no default in Pulumi.yaml"


# (id, raw config, key named in the message, the bad value as shown, a phrase of the problem)
BAD_INPUTS = [
    ("managed-no-app-source", {"postgresMode": "managed"}, "appTag", "''",
     "at least one app source"),
    ("managed-replica-count", {**MANAGED, "replicaCount": 2}, "replicaCount", "2",
     "not used in managed mode (there: managedReplica)"),
    ("managed-allowed-sources", {**MANAGED, "postgresAllowedSources": ["10.0.0.0/24"]},
     "postgresAllowedSources", "['10.0.0.0/24']", "appTag, appDropletIds or appCidrs"),
    ("managed-hosts", {**MANAGED, "hosts": HOSTS["hosts"]}, "hosts", "<3 entries>",
     "managed mode runs no servers"),
    ("db-size-droplet-slug", {**MANAGED, "dbClusterSize": "s-2vcpu-4gb"}, "dbClusterSize",
     "'s-2vcpu-4gb'", "database size slug"),
    ("db-nodes-4", {**MANAGED, "dbNodeCount": 4}, "dbNodeCount", "4", "1 to 3"),
    ("db-nodes-0", {**MANAGED, "dbNodeCount": 0}, "dbNodeCount", "0", "1 to 3"),
    ("db-standby-on-smallest", {**MANAGED, "dbClusterSize": "db-s-1vcpu-1gb", "poolSize": 20,
     "sidekiqThreads": 5, "streamingDbPool": 5},
     "dbNodeCount", "2", "cannot have standby nodes"),
    ("pool-too-large", {**MANAGED, "poolSize": 98}, "poolSize", "98",
     "larger than db-s-2vcpu-4gb allows: 97"),
    ("pool-too-large-small-plan", {**MANAGED, "dbClusterSize": "db-s-1vcpu-2gb", "poolSize": 48},
     "poolSize", "48", "allows: 47"),
    ("pool-zero", {**MANAGED, "poolSize": 0}, "poolSize", "0", "not an integer"),
    ("pool-name-dash", {**MANAGED, "poolName": "mastodon-pool"}, "poolName", "'mastodon-pool'",
     "must match"),
    ("replica-flag-word", {**MANAGED, "managedReplica": "yes"}, "managedReplica", "'yes'",
     "true or false"),
    ("replica-other-region", {**MANAGED, "managedReplicaRegion": "tor1"}, "managedReplicaRegion",
     "'tor1'", "not the stack's region nyc3"),
    ("app-tag-bad", {**MANAGED, "appTag": "mastodon app"}, "appTag", "'mastodon app'",
     "tag name"),
    ("app-droplet-id", {**MANAGED, "appDropletIds": ["web-1"]}, "appDropletIds[0]", "'web-1'",
     "droplet id"),
    ("app-cidr-anywhere", {**MANAGED, "appCidrs": ["0.0.0.0/0"]}, "appCidrs[0]", "'0.0.0.0/0'",
     "every address"),
    ("app-cidr-v6", {**MANAGED, "appCidrs": ["2001:db8::/64"]}, "appCidrs[0]",
     "'2001:db8::/64'", "IPv4 only"),
    ("app-cidr-garbage", {**MANAGED, "appCidrs": ["office"]}, "appCidrs[0]", "'office'",
     "not a valid CIDR"),
    ("bucket-upper", {**MANAGED, "spacesBucket": "Mastodon_Media"}, "spacesBucket",
     "'Mastodon_Media'", "DNS-compatible"),
    ("bucket-dots", {**MANAGED, "spacesBucket": "media.example"}, "spacesBucket",
     "'media.example'", "DNS-compatible"),
    ("bucket-short", {**MANAGED, "spacesBucket": "ab"}, "spacesBucket", "'ab'", "DNS-compatible"),
    ("spaces-region", {**SPACES, "spacesRegion": "nyc1"}, "spacesRegion", "'nyc1'",
     "not a Spaces region"),
    ("cors-origin", {**SPACES, "corsOrigins": ["example.social"]}, "corsOrigins[0]",
     "'example.social'", "origin like https://"),
    ("cors-none", {**SPACES, "corsOrigins": []}, "corsOrigins", "[]", "CORS origin"),
    ("cdn-without-certificate", CDN, "cdnCustomDomain", "'media.example.social'",
     "needs a certificate"),
    ("cdn-without-bucket", {**MANAGED, "cdnCustomDomain": "media.example.social",
     "cdnDnsDomain": "example.social"}, "cdnCustomDomain", "'media.example.social'",
     "needs a bucket"),
    ("cdn-apex", {**SPACES, "cdnCustomDomain": "example", "cdnDnsDomain": "example"},
     "cdnCustomDomain", "'example'", "subdomain"),
    ("cdn-other-zone", {**CDN, "cdnDnsDomain": "example.org"}, "cdnDnsDomain", "'example.org'",
     "not inside it"),
    ("cdn-two-certificates", {**CDN, "cdnDnsDomain": "example.social",
     "cdnCertificateName": "x"}, "cdnCertificateName", "'x'", "use one certificate"),
    ("cdn-zone-alone", {**SPACES, "cdnDnsDomain": "example.social"}, "cdnDnsDomain",
     "'example.social'", "only used with cdnCustomDomain"),
    ("redis-mode", {**MANAGED, "redisMode": "redis"}, "redisMode", "'redis'", "not one of"),
    ("redis-size", {**MANAGED, "redisMode": "managed", "redisSize": "2gb"}, "redisSize", "'2gb'",
     "database size slug"),
    ("redis-nodes", {**MANAGED, "redisMode": "managed", "redisNodeCount": 5}, "redisNodeCount",
     "5", "1 to 3"),
    ("redis-managed-in-hosts-no-source", {**HOSTS, "redisMode": "managed"}, "appTag", "''",
     "at least one app source"),
    ("redis-cache-without-valkey", {**MANAGED, "redisCache": True}, "redisCache", "true",
     "needs redisMode managed (the cache is a Valkey cluster made here), not none"),
    ("redis-cache-external", {**MANAGED, "redisMode": "external", "redisCache": "true"},
     "redisCache", "true", "needs redisMode managed"),
    ("redis-cache-word", {**MANAGED, "redisMode": "managed", "redisCache": "yes"}, "redisCache",
     "'yes'", "true or false"),
    ("mode-unknown", {**DROPLETS, "postgresMode": "k8s"}, "postgresMode", "'k8s'",
     "not one of droplets, hosts, managed"),
    ("region", {**DROPLETS, "region": "nyc9"}, "region", "'nyc9'", "not one of"),
    ("vpc-host-bits", {**DROPLETS, "vpcCidr": "10.118.0.1/20"}, "vpcCidr", "'10.118.0.1/20'",
     "host bits"),
    ("vpc-public", {**DROPLETS, "vpcCidr": "8.8.0.0/16"}, "vpcCidr", "'8.8.0.0/16'",
     "not inside"),
    ("vpc-too-big", {**DROPLETS, "vpcCidr": "10.0.0.0/8"}, "vpcCidr", "'10.0.0.0/8'", "/16 to /24"),
    ("vpc-too-small", {**DROPLETS, "vpcCidr": "10.118.0.0/25"}, "vpcCidr", "'10.118.0.0/25'",
     "/16 to /24"),
    ("vpc-no-prefix", {**DROPLETS, "vpcCidr": "10.118.0.0"}, "vpcCidr", "'10.118.0.0'",
     "not a CIDR"),
    ("vpc-garbage", {**DROPLETS, "vpcCidr": "banana/20"}, "vpcCidr", "'banana/20'",
     "not a valid CIDR"),
    ("image", {**DROPLETS, "image": "ubuntu-20-04-x64"}, "image", "'ubuntu-20-04-x64'",
     "not one of"),
    ("size-word", {**DROPLETS, "primarySize": "large"}, "primarySize", "'large'", "size slug"),
    ("size-upper", {**DROPLETS, "replicaSize": "S-2VCPU"}, "replicaSize", "'S-2VCPU'", "size slug"),
    ("size-no-memory", {**DROPLETS, "replicaSize": "s-2vcpu"}, "replicaSize", "'s-2vcpu'",
     "size slug"),
    ("replicas-too-many", {**DROPLETS, "replicaCount": 11}, "replicaCount", "11", "0 to 10"),
    ("replicas-negative", {**DROPLETS, "replicaCount": -1}, "replicaCount", "-1", "0 to 10"),
    ("replicas-word", {**DROPLETS, "replicaCount": "two"}, "replicaCount", "'two'", "0 to 10"),
    ("replicas-bool", {**DROPLETS, "replicaCount": True}, "replicaCount", "True", "0 to 10"),
    ("version-old", {**DROPLETS, "postgresVersion": 14}, "postgresVersion", "14", "15 to 18"),
    ("version-new", {**DROPLETS, "postgresVersion": "19"}, "postgresVersion", "'19'", "15 to 18"),
    ("version-minor", {**DROPLETS, "postgresVersion": "18.1"}, "postgresVersion", "'18.1'",
     "15 to 18"),
    ("ssh-keys-none", {**DROPLETS, "sshKeyIds": []}, "sshKeyIds", "[]", "at least one"),
    ("ssh-keys-not-list", {**DROPLETS, "sshKeyIds": "12345"}, "sshKeyIds", "'12345'",
     "not a list"),
    ("ssh-key-bad", {**DROPLETS, "sshKeyIds": ["my laptop"]}, "sshKeyIds[0]", "'my laptop'",
     "key id"),
    ("ssh-user", {**DROPLETS, "sshUser": "Root"}, "sshUser", "'Root'", "unix user"),
    ("admin-none", {**DROPLETS, "adminCidrs": []}, "adminCidrs", "[]", "at least one"),
    ("admin-anywhere-v4", {**DROPLETS, "adminCidrs": ["0.0.0.0/0"]}, "adminCidrs[0]",
     "'0.0.0.0/0'", "whole internet"),
    ("admin-anywhere-v6", {**DROPLETS, "adminCidrs": ["203.0.113.7/32", "::/0"]}, "adminCidrs[1]",
     "'::/0'", "whole internet"),
    ("admin-host-bits", {**DROPLETS, "adminCidrs": ["203.0.113.7/24"]}, "adminCidrs[0]",
     "'203.0.113.7/24'", "host bits"),
    ("admin-garbage", {**DROPLETS, "adminCidrs": ["office"]}, "adminCidrs[0]", "'office'",
     "not a CIDR"),
    ("sources-public", {**DROPLETS, "postgresAllowedSources": ["203.0.113.0/24"]},
     "postgresAllowedSources[0]", "'203.0.113.0/24'", "not a private range"),
    ("sources-anywhere", {**DROPLETS, "postgresAllowedSources": ["0.0.0.0/0"]},
     "postgresAllowedSources[0]", "'0.0.0.0/0'", "every address"),
    ("sources-outside-vpc", {**DROPLETS, "postgresAllowedSources": ["10.0.0.0/8"]},
     "postgresAllowedSources[0]", "'10.0.0.0/8'", "not inside vpcCidr 10.118.0.0/20"),
    ("sources-host-bits", {**HOSTS, "postgresAllowedSources": ["10.0.0.5/24"]},
     "postgresAllowedSources[0]", "'10.0.0.5/24'", "host bits"),
    ("db-name-upper", {**DROPLETS, "dbName": "Mastodon"}, "dbName", "'Mastodon'", "must match"),
    ("db-name-postgres", {**DROPLETS, "dbName": "postgres"}, "dbName", "'postgres'",
     "maintenance database"),
    ("db-user-postgres", {**DROPLETS, "dbUser": "postgres"}, "dbUser", "'postgres'", "superuser"),
    ("db-user-dash", {**DROPLETS, "dbUser": "mast-odon"}, "dbUser", "'mast-odon'", "must match"),
    ("db-user-pg-prefix", {**DROPLETS, "dbUser": "pg_mastodon"}, "dbUser", "'pg_mastodon'",
     "reserves"),
    ("replication-user-long", {**DROPLETS, "replicationUser": "r" * 64}, "replicationUser",
     repr("r" * 64), "must match"),
    ("replication-user-same", {**DROPLETS, "replicationUser": "mastodon"}, "replicationUser",
     "'mastodon'", "same role as dbUser"),
    ("wal-keep-unit", {**DROPLETS, "walKeepSize": "1G"}, "walKeepSize", "'1G'", "units"),
    ("wal-keep-case", {**DROPLETS, "walKeepSize": "1gb"}, "walKeepSize", "'1gb'", "units"),
    ("slot-wal-smaller", {**DROPLETS, "maxSlotWalKeepSize": "512MB"}, "maxSlotWalKeepSize",
     "'512MB'", "smaller than walKeepSize 1GB"),
    ("slot-wal-zero", {**DROPLETS, "walKeepSize": "0MB", "maxSlotWalKeepSize": "0MB"},
     "maxSlotWalKeepSize", "'0MB'", "lags"),
    ("hosts-in-droplets", {**DROPLETS, "hosts": HOSTS["hosts"]}, "hosts", "<3 entries>",
     "only used in hosts mode"),
    ("hosts-empty", {**HOSTS, "hosts": []}, "hosts", "[]", "at least one host"),
    ("hosts-not-list", {**HOSTS, "hosts": "203.0.113.10"}, "hosts", "'203.0.113.10'",
     "not a list"),
    ("hosts-entry-not-object", {**HOSTS, "replicaCount": 0, "hosts": ["203.0.113.10"]},
     "hosts[0]", "'203.0.113.10'", "not an object"),
    ("hosts-unknown-key", with_host(1, privateAdress="10.0.0.99"), "hosts[1].privateAdress",
     "'10.0.0.99'", "unknown key"),
    ("hosts-name", with_host(0, name="DB_1"), "hosts[0].name", "'DB_1'", "must match"),
    ("hosts-public-missing", with_host(0, publicAddress=None), "hosts[0].publicAddress", "None",
     "missing"),
    ("hosts-public-bad-ip", with_host(0, publicAddress="203.0.113.999"), "hosts[0].publicAddress",
     "'203.0.113.999'", "not an IP address or DNS name"),
    ("hosts-private-name", with_host(1, privateAddress="db.internal"), "hosts[1].privateAddress",
     "'db.internal'", "not an IP address"),
    ("hosts-ssh-user", with_host(1, sshUser="Bad User"), "hosts[1].sshUser", "'Bad User'",
     "unix user"),
    ("hosts-ssh-port-zero", with_host(1, sshPort=0), "hosts[1].sshPort", "0", "1 to 65535"),
    ("hosts-ssh-port-high", with_host(1, sshPort=70000), "hosts[1].sshPort", "70000",
     "1 to 65535"),
    ("hosts-ssh-port-word", with_host(1, sshPort="ssh"), "hosts[1].sshPort", "'ssh'",
     "1 to 65535"),
    ("hosts-key-type-only", with_host(0, hostKey="ssh-ed25519"), "hosts[0].hostKey",
     "'ssh-ed25519'", "<type> <base64>"),
    ("hosts-key-not-base64", with_host(0, hostKey="ssh-ed25519 AAAA-bad"), "hosts[0].hostKey",
     "'ssh-ed25519 AAAA-bad'", "not valid base64"),
    ("hosts-key-truncated", with_host(0, hostKey=HOST_KEY[:40]), "hosts[0].hostKey",
     repr(HOST_KEY[:40]), "copied only in part"),
    ("hosts-key-wrong-type", with_host(0, hostKey=HOST_KEY.replace("ssh-ed25519", "ssh-rsa", 1)),
     "hosts[0].hostKey", repr(HOST_KEY.replace("ssh-ed25519", "ssh-rsa", 1)), "not a whole"),
    ("hosts-duplicate-name", with_host(2, name="db-a"), "hosts[2].name", "'db-a'",
     "same name as hosts[0]"),
    ("hosts-duplicate-public", with_host(2, publicAddress="203.0.113.10"),
     "hosts[2].publicAddress", "'203.0.113.10'", "same publicAddress and sshPort as hosts[0]"),
    ("hosts-duplicate-private", with_host(2, privateAddress="10.0.0.11"),
     "hosts[2].privateAddress", "'10.0.0.11'", "same privateAddress as hosts[1]"),
    ("hosts-too-few", {**HOSTS, "replicaCount": 3}, "hosts", "<3 entries>",
     "replicaCount 3 needs 4 hosts"),
    ("unknown-key", {**DROPLETS, "replicaCont": 2}, "replicaCont", "2", "unknown key"),
    ("max-connections-below-pool", {**DROPLETS, "maxConnections": 50}, "maxConnections", "50",
     "pumaProcesses x pumaThreads + sidekiqThreads + streamingDbPool = 2 x 5 + 25 + 10 = 45 (the "
     "pool of each host), + 10 direct (migrations, checks) + 3 superuser_reserved_connections = "
     "58"),
    ("max-connections-below-threads-without-pool", {**DROPLETS, "pgbouncer": False,
     "sidekiqThreads": 100}, "maxConnections", "100", "= 2 x 5 + 100 + 10 = 120"),
    ("max-connections-tiny", {**DROPLETS, "maxConnections": 5}, "maxConnections", "5",
     "20 to 10000"),
    ("pool-port-postgres", {**DROPLETS, "pgbouncerPort": 5432}, "pgbouncerPort", "5432",
     "PostgreSQL's own port"),
    ("pool-port-privileged", {**DROPLETS, "pgbouncerPort": 80}, "pgbouncerPort", "80",
     "1024 to 65535"),
    ("pgbouncer-word", {**DROPLETS, "pgbouncer": "on"}, "pgbouncer", "'on'", "true or false"),
    ("puma-zero", {**DROPLETS, "pumaProcesses": 0}, "pumaProcesses", "0", "1 to 1000"),
    ("managed-clients-over-pool", {**MANAGED, "sidekiqThreads": 50}, "poolSize", "50",
     "= 2 x 5 + 50 + 10 = 70; the others wait for a connection"),
    ("pgbouncer-setting-in-managed", {**MANAGED, "pgbouncerOpenFiles": 8192},
     "pgbouncerOpenFiles", "8192", "not used in managed mode (there: DigitalOcean's pgBouncer)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "key", "shown", "what"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_is_named_shown_and_fixed(raw: dict, key: str, shown: str, what: str) -> None:
    lines = problems(raw)
    assert len(lines) == 1, lines  # one bad value, one line: no follow-on noise
    line = lines[0]
    assert line.startswith(f"{PROJECT}:{key} = {shown}: "), line
    assert what in line
    assert ". Fix: " in line


def test_max_connections_fix_sets_exactly_what_the_pool_needs() -> None:
    (line,) = problems({**DROPLETS, "pumaProcesses": 8, "sidekiqThreads": 50})
    # 8 x 5 + 50 + 10 = 100 backends per pool, + 10 direct + 3 reserved = 113 > 100.
    assert line.endswith(
        "Fix: pulumi config set mastodon-data:maxConnections 113 (or lower pumaProcesses, "
        "pumaThreads, sidekiqThreads, streamingDbPool)"
    ), line
    settings = parse_settings(
        {**DROPLETS, "pumaProcesses": 8, "sidekiqThreads": 50, "maxConnections": 113}, ALL_SECRETS
    )
    assert settings.replication.pool == records.PoolSettings(6432, 100, 1000, 4096)
    assert settings.replication.max_connections == 113
    big = parse_settings(
        {**DROPLETS, "sidekiqThreads": 600, "maxConnections": 700, "pgbouncerMaxClientConn": 1240},
        ALL_SECRETS,
    ).replication.pool
    assert big == records.PoolSettings(6432, 620, 1240, 4096)  # client slots: twice the threads


def test_pgbouncer_off_leaves_no_pool() -> None:
    settings = parse_settings({**DROPLETS, "pgbouncer": "false"}, ALL_SECRETS)
    assert settings.replication.pool is None and settings.droplets.pool is None
    assert parse_settings(MANAGED, ALL_SECRETS).replication is None


def test_fixes_are_commands() -> None:
    (line,) = problems({**DROPLETS, "region": "nyc9"})
    assert line.endswith("Fix: pulumi config set mastodon-data:region nyc3")
    (line,) = problems({**DROPLETS, "adminCidrs": ["0.0.0.0/0"]})
    assert "Fix: pulumi config set --path 'mastodon-data:adminCidrs[0]' 203.0.113.7/32" in line
    (line,) = problems({**DROPLETS, "primarySize": "large"})
    assert "doctl compute size list" in line
    (line,) = problems({**DROPLETS, "replicaCont": 2})
    assert "did you mean replicaCount?" in line
    (line,) = problems(with_host(1, privateAdress="10.0.0.99"))
    assert "did you mean privateAddress?" in line
    (line,) = problems({**HOSTS, "replicaCount": 3})
    assert "add hosts" in line and "pulumi config set mastodon-data:replicaCount 2" in line
    (line,) = problems({**DROPLETS, "hosts": HOSTS["hosts"]})
    assert "pulumi config set mastodon-data:postgresMode hosts" in line


@pytest.mark.parametrize(
    ("key", "fix"),
    [
        (
            "sshPrivateKey",
            "cat ~/.ssh/id_ed25519 | pulumi config set --secret mastodon-data:sshPrivateKey",
        ),
        (
            "replicationPassword",
            "pulumi config set --secret mastodon-data:replicationPassword "
            '"$(openssl rand -base64 32)"',
        ),
        (
            "dbPassword",
            'pulumi config set --secret mastodon-data:dbPassword "$(openssl rand -base64 32)"',
        ),
    ],
)
def test_missing_secret(key: str, fix: str) -> None:
    assert problems(DROPLETS, ALL_SECRETS - {key}) == [
        f"mastodon-data:{key} = (not set): missing secret. Fix: {fix}"
    ]


def test_secret_set_in_clear_is_refused_without_showing_it() -> None:
    password = "clear-text-password-123"
    (line,) = problems({**DROPLETS, "dbPassword": password}, ALL_SECRETS - {"dbPassword"})
    assert line.startswith("mastodon-data:dbPassword = [plain text]: ")
    assert "--secret mastodon-data:dbPassword" in line
    assert password not in line


def test_several_problems_reported_together() -> None:
    lines = problems(
        {**DROPLETS, "region": "mars1", "replicaCount": 99, "dbUser": "postgres"},
        ALL_SECRETS - {"dbPassword"},
    )
    assert [line.split(" = ")[0] for line in lines] == [
        "mastodon-data:region",
        "mastodon-data:replicaCount",
        "mastodon-data:dbUser",
        "mastodon-data:dbPassword",
    ]


def test_hosts_mode_ignores_droplet_only_requirements() -> None:
    settings = parse_settings({**HOSTS, "sshKeyIds": [], "adminCidrs": []}, ALL_SECRETS)
    assert settings.hosts[0].name == "db-a"


def openssh_key(cipher: str) -> str:
    blob = b"openssh-key-v1\0" + ssh_string(cipher.encode()) + ssh_string(b"none") + bytes(40)
    body = base64.b64encode(blob).decode()
    return f"-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----\n"


GOOD_PASSWORD = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA=="


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("dbPassword", GOOD_PASSWORD),
        ("replicationPassword", GOOD_PASSWORD),
        ("sshPrivateKey", openssh_key("none")),
        ("sshPrivateKey", "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"),
    ],
)
def test_good_secrets(name: str, value: str) -> None:
    assert secret_problems(name, value) == []


@pytest.mark.parametrize(
    ("name", "value", "what"),
    [
        ("dbPassword", "short-secret", "shorter than 16 characters"),
        ("replicationPassword", "has a space in it, long enough", "whitespace or control"),
        ("dbPassword", "tab\tseparated-secret-value", "whitespace or control"),
        ("dbPassword", "bell\x07-in-the-secret-value", "whitespace or control"),
        ("sshPrivateKey", "not a key at all", "not a private key"),
        ("sshPrivateKey", HOST_KEY, "looks like a public key"),
        ("sshPrivateKey", openssh_key("aes256-ctr"), "passphrase"),
        (
            "sshPrivateKey",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIE\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "passphrase",
        ),
    ],
)
def test_bad_secret_named_never_shown(name: str, value: str, what: str) -> None:
    (line,) = secret_problems(name, value)
    assert line.startswith(f"mastodon-data:{name} = [secret]: ")
    assert what in line and ". Fix: " in line
    assert value not in line
    assert all(part not in line for part in value.split() if len(part) >= 8)


def test_valid_managed_config_with_every_service() -> None:
    settings = parse_settings(
        {
            **MANAGED,
            "region": "tor1",
            "dbClusterSize": "db-s-4vcpu-8gb",
            "poolSize": "197",
            "managedReplica": "true",
            "managedReplicaRegion": "tor1",
            "appDropletIds": ["4242"],
            "appCidrs": ["203.0.113.50", "198.51.100.0/24"],
            "spacesBucket": "mastodon-media",
            "spacesRegion": "nyc3",
            "cdnCustomDomain": "media.example.social",
            "cdnDnsDomain": "example.social",
            "redisMode": "external",
        },
        {"redisUrl"},  # no replication secrets: managed PostgreSQL makes its own password
    )
    assert settings.mode == "managed"
    assert settings.managed == records.ManagedPostgresSettings(
        18,
        "tor1",
        "mastodon_production",
        "mastodon",
        "db-s-4vcpu-8gb",
        2,
        "mastodon_pool",
        197,
        True,
    )
    assert settings.replication is None and settings.droplets is None
    assert settings.app_sources == records.AppSources(
        "mastodon-app", ("4242",), ("203.0.113.50", "198.51.100.0/24")
    )
    assert settings.app_sources.firewall_rules() == [
        {"type": "tag", "value": "mastodon-app"},
        {"type": "droplet", "value": "4242"},
        {"type": "ip_addr", "value": "203.0.113.50"},
        {"type": "ip_addr", "value": "198.51.100.0/24"},
    ]
    assert settings.spaces == records.SpacesSettings(
        "mastodon-media", "nyc3", ("*",), "media.example.social", "example.social", ""
    )
    assert settings.redis == records.RedisSettings("external", "db-s-1vcpu-2gb", 1, "tor1")
    assert settings.required_secrets() == ("redisUrl",)
    assert settings.warnings == ()


def test_spaces_region_defaults_to_the_stack_region() -> None:
    settings = parse_settings(
        {**DROPLETS, "region": "fra1", "spacesBucket": "media-x"}, ALL_SECRETS
    )
    assert settings.spaces.region == "fra1"
    assert settings.redis is None and settings.managed is None


def test_services_in_droplets_and_hosts_mode() -> None:
    droplets = parse_settings(
        {**DROPLETS, "redisMode": "managed", "appTag": "web", "spacesBucket": "media-x"},
        ALL_SECRETS,
    )
    assert droplets.redis.mode == "managed" and droplets.spaces.bucket == "media-x"
    hosts = parse_settings({**HOSTS, "redisMode": "external"}, ALL_SECRETS | {"redisUrl"})
    assert hosts.required_secrets() == (*SECRET_KEYS, "redisUrl")


def test_single_node_is_accepted_with_a_warning() -> None:
    settings = parse_settings({**MANAGED, "dbNodeCount": 1}, frozenset())
    assert settings.managed.node_count == 1
    (warning,) = settings.warnings
    assert warning.startswith("mastodon-data:dbNodeCount = 1: no standby node")
    assert "pulumi config set mastodon-data:dbNodeCount 2" in warning


@pytest.mark.parametrize(
    ("size", "limit"),
    [
        ("db-s-1vcpu-1gb", 22),
        ("db-s-1vcpu-2gb", 47),
        ("db-s-2vcpu-4gb", 97),
        ("db-s-4vcpu-8gb", 197),
        ("db-s-6vcpu-16gb", 397),
        ("db-s-8vcpu-32gb", 797),
        ("db-s-16vcpu-64gb", 1597),
        ("gd-2vcpu-8gb", 197),
        ("db-intel-1vcpu-2gb", 47),
        ("large", None),
    ],
)
def test_connection_limit_per_size(size: str, limit: int | None) -> None:
    assert connection_limit(size) == limit


def test_pool_at_the_limit_is_accepted() -> None:
    assert parse_settings({**MANAGED, "poolSize": 97}, frozenset()).managed.pool_size == 97


def test_managed_mode_needs_no_replication_secrets_and_external_redis_needs_its_url() -> None:
    assert parse_settings(MANAGED, frozenset()).required_secrets() == ()
    assert problems({**MANAGED, "redisMode": "external"}, frozenset()) == [
        "mastodon-data:redisUrl = (not set): missing secret. Fix: pulumi config set --secret "
        "mastodon-data:redisUrl 'rediss://default:<password>@<host>:<port>'"
    ]


def test_redis_url_given_to_managed_redis_is_refused() -> None:
    (line,) = problems({**MANAGED, "redisMode": "managed"}, {"redisUrl"})
    assert line.startswith("mastodon-data:redisUrl = [secret]: set, but redisMode managed")


def test_cdn_fix_names_the_zone() -> None:
    (line,) = problems(CDN)
    assert "pulumi config set mastodon-data:cdnDnsDomain example.social" in line
    assert "cdnCertificateName" in line


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("redis://default:pw-0123@10.0.0.5:6379", "redis:// sends the password"),
        ("https://redis.example.net", "not a rediss://"),
        ("rediss://default:pw-0123@redis.example.net", "has no port"),
        ("rediss://default:pw 0123@redis.example.net:6380", "whitespace"),
        ("rediss://default:pw-0123@redis.example.net:port", "not a URL"),
    ],
)
def test_bad_redis_url_named_never_shown(value: str, what: str) -> None:
    (line,) = secret_problems("redisUrl", value)
    assert line.startswith("mastodon-data:redisUrl = [secret]: ")
    assert what in line and "pw-0123" not in line and "pw 0123" not in line


def test_good_redis_url() -> None:
    assert secret_problems("redisUrl", "rediss://default:pw%2F1@redis.example.net:25061") == []
