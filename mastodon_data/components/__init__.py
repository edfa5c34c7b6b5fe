"""One ComponentResource per concern; each takes the settings record it reads and exposes what
others need as attributes. Type tokens are `mastodon-data:index:<Name>` (part of every URN)."""

from mastodon_data.components.admin_keys import AuthorizedKeys
from mastodon_data.components.droplets import DropletTier
from mastodon_data.components.managed_postgres import ManagedPostgres
from mastodon_data.components.network import PrivateNetwork
from mastodon_data.components.redis import ManagedValkey
from mastodon_data.components.replication import ReplicationSteps
from mastodon_data.components.spaces import SpacesMedia

__all__ = [
    "AuthorizedKeys",
    "DropletTier",
    "ManagedPostgres",
    "ManagedValkey",
    "PrivateNetwork",
    "ReplicationSteps",
    "SpacesMedia",
]
