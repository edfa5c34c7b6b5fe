"""The stack's settings, validated in one place before anything is created.

Pure (no Pulumi import; the only file read is the packaged Pulumi.yaml, for the types and
defaults, on first use), so the Pulumi program, the tools and the tests share it. Every problem
is collected and reported at once, one line each, naming the key, the bad value (never a
secret's) and the exact fix. By concern:

    project.py   the project's name; each setting's type and default (Pulumi.yaml)
    checks.py    the message format, the Field table's reader, shared checks
    topology.py  mode, region, VPC, droplets, sources, database names, WAL
    pooling.py   PgBouncer's pools on the stack's own servers, max_connections
    read_endpoint.py  the replica health endpoint's port and lag bounds, the read endpoint
    hosts.py     hosts mode's list of servers
    lifecycle.py protection, the primary's position, upgrades, admin keys
    upgrade.py   hosts mode's blue/green major upgrade (upgradeFrom)
    managed.py   managed PostgreSQL        access.py   who reaches the managed databases
    media.py     Spaces and the CDN        redis.py    Redis / Valkey
    backups.py   pgBackRest's repository, retention and schedules
    monitoring.py the alert rules' thresholds, DigitalOcean's alert policies
    secrets.py   which secrets, set as secrets, and their values
    records.py   the Settings records      parse.py    parse_settings over all of them
"""

from mastodon_data.config.hosts import HOSTS_KEY
from mastodon_data.config.managed import connection_limit
from mastodon_data.config.parse import OPERATION_KEYS, RESEED_KEY, parse_settings
from mastodon_data.config.project import DEFAULTS, PROJECT, TYPES, decode
from mastodon_data.config.records import (
    AlertPolicySettings,
    AlertThresholds,
    AppSources,
    BackupSettings,
    ConfigError,
    DropletSettings,
    Host,
    LifecycleSettings,
    ManagedPostgresSettings,
    NetworkSettings,
    PoolSettings,
    RedisSettings,
    ReplicationSettings,
    Settings,
    SpacesSettings,
    UpgradeSettings,
)
from mastodon_data.config.secrets import (
    ALL_SECRET_KEYS,
    BACKUP_PASSPHRASE_KEY,
    BACKUP_SECRET_KEY,
    REDIS_URL_KEY,
    SECRET_KEYS,
    SLACK_URL_KEY,
    required_secrets,
    secret_problems,
)
from mastodon_data.config.upgrade import UPGRADE_KEY

__all__ = [
    "AlertPolicySettings",
    "AlertThresholds",
    "ALL_SECRET_KEYS",
    "BACKUP_PASSPHRASE_KEY",
    "BACKUP_SECRET_KEY",
    "DEFAULTS",
    "HOSTS_KEY",
    "OPERATION_KEYS",
    "PROJECT",
    "REDIS_URL_KEY",
    "RESEED_KEY",
    "SECRET_KEYS",
    "SLACK_URL_KEY",
    "TYPES",
    "AppSources",
    "BackupSettings",
    "ConfigError",
    "DropletSettings",
    "Host",
    "LifecycleSettings",
    "ManagedPostgresSettings",
    "NetworkSettings",
    "PoolSettings",
    "RedisSettings",
    "ReplicationSettings",
    "Settings",
    "SpacesSettings",
    "UPGRADE_KEY",
    "UpgradeSettings",
    "connection_limit",
    "decode",
    "parse_settings",
    "required_secrets",
    "secret_problems",
]
