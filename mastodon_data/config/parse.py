"""parse_settings: every domain's checks over one stack's values, all problems reported at once."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from mastodon_data.config.access import parse_app_sources
from mastodon_data.config.backups import parse_backups, wanted
from mastodon_data.config.checks import Validation, did_you_mean
from mastodon_data.config.hosts import HOSTS_KEY, parse_hosts
from mastodon_data.config.lifecycle import parse_lifecycle
from mastodon_data.config.managed import parse_managed
from mastodon_data.config.media import parse_spaces
from mastodon_data.config.monitoring import (
    parse_alert_policies,
    parse_alerts,
    parse_monitoring_sources,
)
from mastodon_data.config.pooling import parse_pooling
from mastodon_data.config.project import DEFAULTS, PROJECT
from mastodon_data.config.read_endpoint import parse_read_endpoint
from mastodon_data.config.records import (
    ConfigError,
    DropletSettings,
    NetworkSettings,
    ReplicationSettings,
    Settings,
    pick,
)
from mastodon_data.config.redis import parse_redis
from mastodon_data.config.secrets import (
    ALL_SECRET_KEYS,
    SLACK_URL_KEY,
    check_secrets_present,
    required_secrets,
)
from mastodon_data.config.topology import parse_topology
from mastodon_data.config.upgrade import UPGRADE_KEY, parse_upgrade

# Keys read elsewhere (operations switches in mastodon_data/stack_config.py), not settings.
RESEED_KEY = "reseedReplicas"  # replicas to re-seed from the primary on the next run
OPERATION_KEYS = frozenset({RESEED_KEY})


def parse_settings(raw: Mapping[str, Any], secrets_present: Collection[str]) -> Settings:
    """Settings from camelCase config values (unset ones take Pulumi.yaml's defaults), or one
    ConfigError listing every problem."""
    v = Validation(raw)
    check_unknown_keys(v)
    topology = parse_topology(v)
    mode = topology["mode"] if v.ok("postgresMode") else None
    topology |= parse_pooling(v, mode)
    pool, replicas = topology["pool"], topology["replica_count"]
    topology |= parse_read_endpoint(v, pool and pool.pgbouncer_port, mode, replicas)
    topology |= parse_monitoring_sources(v)
    hosts = parse_hosts(v, mode, replicas)
    managed = parse_managed(v, mode, topology)
    spaces = parse_spaces(v, topology["region"])
    redis = parse_redis(v, secrets_present, topology["region"])
    redis_mode = redis.mode if redis else "none"
    app_sources = parse_app_sources(v, needed="managed" in (mode, redis_mode))
    lifecycle = parse_lifecycle(v, mode, topology)
    upgrade = parse_upgrade(v, mode, topology["postgres_version"], hosts, pool)
    alerts = parse_alerts(v)
    slack_url_set = SLACK_URL_KEY in raw or SLACK_URL_KEY in secrets_present
    alert_policies = parse_alert_policies(v, mode, alerts, slack_url_set)
    backups = parse_backups(v, mode, topology["region"], secrets_present)
    backups_on, backup_key = wanted(v, mode)
    exporters = wants_exporters(v, mode, topology["monitoring_sources"])
    needed = required_secrets(
        mode,
        redis_mode,
        backups=backups_on,
        backup_key=backup_key,
        exporters=exporters,
        alert_slack=bool(v.value("alertSlackChannel")),
    )
    check_secrets_present(v, raw, secrets_present, needed)
    if v.lines:
        raise ConfigError("\n".join(v.lines))
    return Settings(
        mode=mode,
        network=NetworkSettings(topology["region"], topology["vpc_cidr"]),
        replication=pick(ReplicationSettings, topology) if mode != "managed" else None,
        droplets=pick(DropletSettings, topology) if mode == "droplets" else None,
        hosts=hosts,
        managed=managed,
        spaces=spaces,
        redis=redis,
        app_sources=app_sources,
        backups=backups,
        lifecycle=lifecycle,
        alerts=alerts,
        alert_policies=alert_policies,
        upgrade=upgrade,
        warnings=tuple(v.warnings),
    )


def wants_exporters(v: Validation, mode: str | None, sources: tuple[str, ...]) -> bool:
    """Exporters run on the stack's own servers, for monitoringSources; managed mode has none."""
    if mode == "managed" and sources:
        v.bad(
            "monitoringSources",
            list(sources),
            "managed mode runs no exporters: DigitalOcean serves the cluster's metrics (stack "
            "output prometheus_targets)",
            f"pulumi config rm {PROJECT}:monitoringSources",
        )
    return mode != "managed" and bool(sources)


def check_unknown_keys(v: Validation) -> None:
    known = [*DEFAULTS, HOSTS_KEY, UPGRADE_KEY]
    for key in v.raw:
        if key in known or key in ALL_SECRET_KEYS or key in OPERATION_KEYS:
            continue
        fix = f"{did_you_mean(key, known)}pulumi config rm {PROJECT}:{key}"
        v.bad(str(key), v.raw[key], "unknown key", fix)
