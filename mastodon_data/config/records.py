"""What a valid configuration becomes: plain frozen records, one per component that reads it
(a value two components need is in both records), and the one record of a database server."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from mastodon_data.config.secrets import required_secrets

POSTGRES_PORT = 5432  # of the servers this stack runs (droplets, hosts)


class ConfigError(ValueError):
    """All problems of a stack's settings, one per line."""


@dataclass(frozen=True)
class Host:
    """A database server: an entry of `hosts` (hosts mode) or a droplet this stack makes, whose
    addresses are then Pulumi Outputs until the droplet exists. The role follows the order: the
    first is the primary, the next replicaCount are replicas, the rest spares."""

    name: str
    role: str  # primary | replica | spare
    public_address: Any
    private_address: Any
    ssh_user: str = "root"
    ssh_port: int = 22
    host_key: str | None = None  # "<type> <base64>", pinned; None: not checked by the program
    # The block device PostgreSQL's files live on (a droplet's volume, a host's dataDevice);
    # None: they stay on the server's own disk. Its size (GiB, dataVolumeSize) when known: a
    # change re-runs the volume step, which grows the filesystem.
    data_device: Any = None
    data_volume_size: Any = None


@dataclass(frozen=True)
class NetworkSettings:
    """The stack's region and private range (the VPC, in droplets and managed mode)."""

    region: str
    cidr: str


@dataclass(frozen=True)
class PoolSettings:
    """PgBouncer on every database host (mastodon_data/config/pooling.py): one transaction pool
    of Mastodon's database in front of that host's PostgreSQL."""

    pgbouncer_port: int
    size: int  # backends the pool may open (default_pool_size = max_db_connections)
    pgbouncer_max_client_conn: int  # max_client_conn
    pgbouncer_open_files: int  # the process's open-file limit (LimitNOFILE, ulimit -n)


@dataclass(frozen=True)
class ReplicationSettings:
    """What the host scripts set up on the stack's own servers (droplets and hosts mode)."""

    postgres_version: int
    db_name: str
    db_user: str
    replication_user: str
    postgres_allowed_sources: tuple[str, ...]
    wal_keep_size: str
    max_slot_wal_keep_size: str
    replication_timeout: str  # wal_sender/receiver_timeout, the replicas' TCP keepalives
    wal_retrieve_retry_interval: str
    replica_count: int
    port: int = POSTGRES_PORT
    certificate_days: int = 825  # validity of a server certificate issued or renewed
    certificate_renew_days: int = 30  # renewed when closer than this to its end
    ca_rotation: str = "none"  # none | prepare | switch: the primary's CA hand-over
    max_connections: int = 100
    pool: PoolSettings | None = None  # None: Mastodon connects to PostgreSQL directly
    # Each server's health endpoint (config/read_endpoint.py): 200 for a replica in bounds.
    replica_health_port: int = 8008
    replica_max_lag_bytes: int = 16 * 2**20
    replica_max_lag_seconds: int = 30
    replica_load_balancer: bool = False  # REPLICA_DB_HOST is the read endpoint
    monitoring_sources: tuple[str, ...] = ()  # the operator's Prometheus; () = no exporters
    exporters_home: str = ""  # where `make exporters` built the upstream exporters
    # What the program ships from there (monitoring/builds.py Build), found at preview.
    exporter_builds: tuple = ()


@dataclass(frozen=True)
class DropletSettings:
    """The droplets, their tags and cloud firewall (droplets mode); the VPC is the network's."""

    image: str
    primary_size: str
    replica_size: str
    replica_count: int
    ssh_key_ids: tuple[str, ...]
    ssh_user: str
    admin_cidrs: tuple[str, ...]
    postgres_allowed_sources: tuple[str, ...]
    data_volume_size: int = 20  # GiB of each droplet's data volume
    port: int = POSTGRES_PORT
    pool: PoolSettings | None = None  # its port is opened like PostgreSQL's
    replica_health_port: int = 8008  # opened to the VPC; the load balancer's health check
    replica_load_balancer: bool = False  # the read endpoint (components/read_endpoint.py)
    monitoring_sources: tuple[str, ...] = ()  # opened to the exporters' ports


@dataclass(frozen=True)
class AppSources:
    """Who may connect to the managed databases: DigitalOcean firewall rules (trusted sources)."""

    tag: str = ""
    droplet_ids: tuple[str, ...] = ()
    cidrs: tuple[str, ...] = ()

    def firewall_rules(self) -> list[dict[str, str]]:
        rules = [{"type": "tag", "value": self.tag}] if self.tag else []
        rules += [{"type": "droplet", "value": d} for d in self.droplet_ids]
        rules += [{"type": "ip_addr", "value": c} for c in self.cidrs]
        return rules


@dataclass(frozen=True)
class ManagedPostgresSettings:
    postgres_version: int
    region: str
    db_name: str
    db_user: str
    size: str
    node_count: int
    pool_name: str
    pool_size: int
    replica: bool  # a read-only node in the cluster's region, reached directly (no pool)


@dataclass(frozen=True)
class SpacesSettings:
    bucket: str
    region: str
    cors_origins: tuple[str, ...]
    cdn_custom_domain: str = ""
    cdn_dns_domain: str = ""  # Let's Encrypt certificate through DigitalOcean DNS
    cdn_certificate_name: str = ""  # or a certificate already in the account


@dataclass(frozen=True)
class RedisSettings:
    mode: str  # managed (Valkey made here) or external (redisUrl secret)
    size: str
    node_count: int
    region: str
    cache: bool = False  # managed: a second cluster for Mastodon's cache (CACHE_REDIS_URL)


@dataclass(frozen=True)
class BackupSettings:
    """pgBackRest's repository (an S3-compatible bucket), retention and schedules."""

    backup_bucket: str
    backup_region: str
    backup_endpoint: str  # host[:port], HTTPS
    make_bucket: bool  # droplets mode: a Spaces bucket and key made by the stack
    backup_access_key_id: str = ""  # hosts mode (its secret: backupSecretAccessKey)
    backup_ca_cert: str = ""
    backup_retention_full: int = 2
    backup_retention_diff: int = 6
    backup_full_schedule: str = "Sun *-*-* 02:30:00"
    backup_diff_schedule: str = "Mon..Sat *-*-* 02:30:00"
    backup_archive_timeout: str = "60s"
    stanza: str = "mastodon"
    backup_path: str = "/pgbackrest"  # inside the bucket


@dataclass(frozen=True)
class UpgradeSettings:
    """A blue/green major upgrade (config/upgrade.py): the old generation's version and servers
    (the primary first; droplets mode: none, the droplets made for it), which generation
    Mastodon writes to after the run, and whether the old one is about to be retired."""

    postgres_version: int
    hosts: tuple[Host, ...]
    serve: str = "new"  # new | old
    retire: bool = False  # lifts protectData from the old droplets


@dataclass(frozen=True)
class LifecycleSettings:
    """How the stack treats what holds data, and which droplet is the primary."""

    protect_data: bool = True  # Pulumi `protect` on droplets, volumes, clusters, buckets
    primary_node: int = 0  # droplets mode: db-<primary_node> is the primary
    postgres_upgrade_to: int = 0  # managed mode: this run may upgrade the cluster to it
    authorized_keys: tuple[str, ...] = ()  # "<type> <base64>" lines kept on every host


@dataclass(frozen=True)
class AlertThresholds:
    """Thresholds of the shipped alert rules (mastodon_data/monitoring/rules.yml), one setting
    each (alertReplayLagSeconds: alert_replay_lag_seconds)."""

    alert_replay_lag_seconds: int = 60
    alert_replay_lag_size: str = "256MB"
    alert_slot_wal_percent: int = 80
    alert_disk_percent: int = 80
    alert_archive_wait_seconds: int = 300
    alert_full_backup_age_hours: int = 192
    alert_diff_backup_age_hours: int = 26
    alert_pool_waiting_clients: int = 0
    alert_pool_max_wait_seconds: int = 2
    alert_connections_percent: int = 80
    alert_open_files_percent: int = 80
    alert_certificate_days: int = 14


@dataclass(frozen=True)
class AlertPolicySettings:
    """DigitalOcean's alert policies over the database droplets or the managed cluster: where
    they notify (at least one of the two) and when (percent over `window`)."""

    emails: tuple[str, ...] = ()
    slack_channel: str = ""  # its webhook URL is the secret alertSlackUrl
    cpu_percent: int = 90
    memory_percent: int = 90
    disk_percent: int = 80
    window: str = "5m"


@dataclass(frozen=True)
class Settings:
    mode: str
    network: NetworkSettings
    replication: ReplicationSettings | None = None  # droplets and hosts mode
    droplets: DropletSettings | None = None  # droplets mode
    hosts: tuple[Host, ...] = ()  # hosts mode, spares included
    managed: ManagedPostgresSettings | None = None  # managed mode
    spaces: SpacesSettings | None = None
    redis: RedisSettings | None = None
    app_sources: AppSources = AppSources()
    backups: BackupSettings | None = None  # droplets and hosts mode
    lifecycle: LifecycleSettings = LifecycleSettings()
    alerts: AlertThresholds = AlertThresholds()
    alert_policies: AlertPolicySettings | None = None  # droplets, managed: with a destination
    upgrade: UpgradeSettings | None = None  # hosts mode, while a blue/green upgrade runs
    warnings: tuple[str, ...] = ()  # accepted, but worth a line in the preview

    def required_secrets(self) -> tuple[str, ...]:
        return required_secrets(
            self.mode,
            self.redis.mode if self.redis else "none",
            backup_key=bool(self.backups and not self.backups.make_bucket),
            backups=self.backups is not None,
            exporters=bool(self.replication and self.replication.monitoring_sources),
            alert_slack=bool(self.alert_policies and self.alert_policies.slack_channel),
        )


def pick(record: type, values: dict[str, Any]) -> Any:
    """`record` made of the entries of `values` named like its fields (the others default)."""
    return record(**{f.name: values[f.name] for f in fields(record) if f.name in values})
