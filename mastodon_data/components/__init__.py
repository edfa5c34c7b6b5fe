"""One ComponentResource per concern; each takes the settings record it reads and exposes what
others need as attributes. Type tokens are `mastodon-data:index:<Name>` (part of every URN).

Each component's module is imported when the component is first used: pulumi_digitalocean
alone takes ~0.3 s to import, which a hosts-mode stack (command provider only) never needs."""

from importlib import import_module

_MODULES = {
    "AlertPolicies": "alert_policies",
    "AuthorizedKeys": "admin_keys",
    "BackupRepository": "backups",
    "BlueGreenUpgrade": "upgrade",
    "DropletTier": "droplets",
    "ManagedPostgres": "managed_postgres",
    "ManagedValkey": "redis",
    "PrivateNetwork": "network",
    "ReplicationSteps": "replication",
    "SpacesMedia": "spaces",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULES[name]}"), name)
