"""What each host script (mastodon_data/host/<script>.py) reads from the JSON on its stdin: one
record per script, its fields named as the script reads them. A setting keeps one name from
Pulumi.yaml to the host, the snake_case of its key (postgresVersion: postgres_version in the
settings records, here and on the host); the other fields are what the plan derives
(wal_senders, replication_peers, ...).

Secrets are no fields: a record's SECRETS names, for each secret parameter, the stack secret
that fills it on the command's stdin (a secret input), never in its trigger or command line.
tests/unit/test_host_params.py holds every plan the tests build against the scripts: each key a
script reads is sent, and no other.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

Address = Any  # text, or a Pulumi Output until the droplet exists

BACKUP_SECRETS = {
    "backup_access_key_id": "backupAccessKeyId",
    "backup_secret_access_key": "backupSecretAccessKey",
    "backup_cipher_passphrase": "backupCipherPassphrase",
}


@dataclass(frozen=True, kw_only=True)
class HostParams:
    SCRIPT: ClassVar[str]  # host/<SCRIPT>.py reads these parameters
    SECRETS: ClassVar[dict[str, str]] = {}  # secret parameter -> stack secret

    def values(self) -> dict[str, Any]:
        """The fields as the script reads them (tuples as JSON lists), secrets apart."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


@dataclass(frozen=True, kw_only=True)
class ClusterParams(HostParams):
    """The cluster a script works on: Debian's <postgres_version>/main, on `port`."""

    postgres_version: int
    port: int


@dataclass(frozen=True, kw_only=True)
class ServerParams(ClusterParams):
    """What the primary and the replicas share: the server's settings, Mastodon's database and
    role, the replication role, TLS."""

    private_address: Address
    db_name: str
    db_user: str
    replication_user: str
    postgres_allowed_sources: tuple[str, ...]
    wal_keep_size: str
    max_slot_wal_keep_size: str
    replication_timeout: str
    wal_retrieve_retry_interval: str
    certificate_days: int
    certificate_renew_days: int
    max_connections: int
    wal_senders: int  # max_wal_senders and max_replication_slots
    pool_peers: tuple[Address, ...]  # the servers whose PgBouncer logs in here (none: no pool)
    monitor_user: str  # the exporters' role, over the local socket ("": no exporters)


@dataclass(frozen=True, kw_only=True)
class PrimaryParams(ServerParams):
    SCRIPT: ClassVar[str] = "primary"
    SECRETS: ClassVar[dict[str, str]] = {
        "replication_password": "replicationPassword",
        "db_password": "dbPassword",
    }
    replication_peers: tuple[Address, ...]  # who may connect as the replication role
    ca_rotation: str


@dataclass(frozen=True, kw_only=True)
class ReplicaParams(ServerParams):
    SCRIPT: ClassVar[str] = "replica"
    SECRETS: ClassVar[dict[str, str]] = {"replication_password": "replicationPassword"}
    name: str  # the host's: its slot and application_name
    primary_address: Address
    primary_port: int
    reseed: bool = False  # the host is in reseedReplicas
    primary_ca_cert: str = ""  # the primary step's report's, when the step runs


@dataclass(frozen=True, kw_only=True)
class SlotsParams(ClusterParams):
    SCRIPT: ClassVar[str] = "slots"
    replicas: tuple[str, ...]  # the configured replicas' names (their slots stay)


@dataclass(frozen=True, kw_only=True)
class StatusParams(ClusterParams):
    SCRIPT: ClassVar[str] = "status"
    stanza: str = ""  # with backups: the repository's backups are reported too


@dataclass(frozen=True, kw_only=True)
class PromoteParams(ClusterParams):
    SCRIPT: ClassVar[str] = "promote"


@dataclass(frozen=True, kw_only=True)
class SwitchoverParams(ClusterParams):
    """One step of a switchover (host/switchover.py); the fields an action does not read keep
    their defaults."""

    SCRIPT: ClassVar[str] = "switchover"
    action: str  # pause, fence, catch_up, unfence, repoint, demote, resume
    db_name: str
    pgbouncer_port: int
    databases: tuple[str, ...] = ()  # the pools to pause or resume
    pause_wait: int = 10  # seconds PAUSE may wait for transactions in flight
    catch_up_wait: int = 30  # seconds the target may take to replay the old primary's last WAL
    checkpoint: str = ""  # the old primary's shutdown checkpoint (LSN)
    replayed: str = ""  # how far the target replayed before its promotion (LSN)
    new_primary_address: Address = ""
    new_primary_cert: str = ""  # its server certificate, trusted by the pools


@dataclass(frozen=True, kw_only=True)
class PoolerParams(ClusterParams):
    SCRIPT: ClassVar[str] = "pooler"
    SECRETS: ClassVar[dict[str, str]] = {"db_password": "dbPassword"}
    private_address: Address
    primary_address: Address  # where DB_NAME goes
    db_name: str
    read_db_name: str  # this host's own PostgreSQL (REPLICA_DB_NAME)
    db_user: str
    pgbouncer_port: int
    pool_size: int  # default_pool_size = max_db_connections
    pgbouncer_max_client_conn: int  # max_client_conn
    pgbouncer_open_files: int  # LimitNOFILE (systemd) or ulimit -n
    monitor_user: str  # in stats_users, for pgbouncer_exporter ("": no exporters)
    primary_ca_cert: str = ""  # the primary step's report's, when the step runs


@dataclass(frozen=True, kw_only=True)
class MonitorParams(ClusterParams):
    """The exporters' role on the primary (host/monitor.py)."""

    SCRIPT: ClassVar[str] = "monitor"
    SECRETS: ClassVar[dict[str, str]] = {"monitor_password": "monitorPassword"}
    monitor_user: str


@dataclass(frozen=True, kw_only=True)
class ExportersParams(HostParams):
    """The exporters of one server (host/exporters.py), on its private address."""

    SCRIPT: ClassVar[str] = "exporters"
    SECRETS: ClassVar[dict[str, str]] = {"monitor_password": "monitorPassword"}
    port: int  # PostgreSQL's
    private_address: Address
    monitor_user: str
    exporter_ports: dict[str, int]  # job -> port: the exporters this server runs
    pgbouncer_port: int  # 0: no pool
    postgres_queries: str  # mastodon_data/monitoring/postgres_queries.yaml
    stanza: str  # pgBackRest's stanza: its state as metrics ("": no backups)
    # The upstream builds shipped to it: name -> version, sha256 and the staged copy's path.
    exporter_builds: dict[str, dict[str, str]]


@dataclass(frozen=True, kw_only=True)
class ReplicaHealthParams(ClusterParams):
    SCRIPT: ClassVar[str] = "replica_health"
    private_address: Address
    replica_health_port: int
    replica_max_lag_bytes: int
    replica_max_lag_seconds: int


@dataclass(frozen=True, kw_only=True)
class RepositoryParams(ClusterParams):
    """pgBackRest's repository (host/repository.py): the bucket, the stanza, retention."""

    SECRETS: ClassVar[dict[str, str]] = BACKUP_SECRETS
    stanza: str
    backup_endpoint: str
    backup_bucket: str
    backup_region: str
    backup_path: str
    backup_ca_cert: str
    backup_retention_full: int
    backup_retention_diff: int


@dataclass(frozen=True, kw_only=True)
class BackupParams(RepositoryParams):
    SCRIPT: ClassVar[str] = "backup"
    action: str  # configure | backup | check
    role: str  # primary | replica
    backup_full_schedule: str
    backup_diff_schedule: str
    backup_archive_timeout: str
    type: str = "full"  # of a backup now: full | diff | incr
    # This server's pools, paused around a restart for archive_mode (none: no PgBouncer).
    databases: tuple[str, ...] = ()
    pgbouncer_port: int = 0
    pause_wait: int = 10  # seconds PgBouncer's PAUSE may wait for the transactions in flight


@dataclass(frozen=True, kw_only=True)
class RestoreParams(RepositoryParams):
    SCRIPT: ClassVar[str] = "restore"
    db_name: str
    target_time: str = ""  # "": the latest the archive reaches
    overwrite: bool = False  # replace a cluster that holds data


@dataclass(frozen=True, kw_only=True)
class VolumeParams(HostParams):
    SCRIPT: ClassVar[str] = "volume"
    data_device: str


@dataclass(frozen=True, kw_only=True)
class AuthorizedKeysParams(HostParams):
    SCRIPT: ClassVar[str] = "authorized_keys"
    ssh_user: str
    authorized_keys: tuple[str, ...]


SCRIPTS = {
    record.SCRIPT: record
    for record in (
        PrimaryParams,
        ReplicaParams,
        SlotsParams,
        StatusParams,
        PromoteParams,
        SwitchoverParams,
        PoolerParams,
        ReplicaHealthParams,
        MonitorParams,
        ExportersParams,
        BackupParams,
        RestoreParams,
        VolumeParams,
        AuthorizedKeysParams,
    )
}
