"""What a valid configuration becomes: plain frozen records the components read."""

from __future__ import annotations

from dataclasses import dataclass

from components.config.secrets import required_secrets


class ConfigError(ValueError):
    """All problems of a stack's settings, one per line."""


@dataclass(frozen=True)
class HostSpec:
    name: str
    public_address: str
    private_address: str
    ssh_user: str = "root"
    ssh_port: int = 22
    host_key: str | None = None


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


@dataclass(frozen=True)
class Settings:
    mode: str
    region: str
    vpc_cidr: str
    image: str
    primary_size: str
    replica_size: str
    replica_count: int
    postgres_version: int
    ssh_key_ids: tuple[str, ...]
    ssh_user: str
    admin_cidrs: tuple[str, ...]
    postgres_allowed_sources: tuple[str, ...]
    db_name: str
    db_user: str
    replication_user: str
    wal_keep_size: str
    max_slot_wal_keep_size: str
    replication_timeout: str  # wal_sender/receiver_timeout, the replicas' TCP keepalives
    wal_retrieve_retry_interval: str
    hosts: tuple[HostSpec, ...]  # hosts mode: [0] primary, [1..replica_count] replicas, rest spares
    port: int = 5432
    managed: ManagedPostgresSettings | None = None  # managed mode only
    spaces: SpacesSettings | None = None
    redis: RedisSettings | None = None
    app_sources: AppSources = AppSources()
    warnings: tuple[str, ...] = ()  # accepted, but worth a line in the preview

    def required_secrets(self) -> tuple[str, ...]:
        return required_secrets(self.mode, self.redis.mode if self.redis else "none")
