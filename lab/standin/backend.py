"""What the account's resources are on the machine: the interface the API's side calls, in
parts. This module's `Backend` does nothing (tests of the API alone); the lab's is
`lab.standin.hosts.LabHosts`.

A host is a record (a dict) with at least these keys, whatever resource it serves (a droplet
or a managed database's node):
    id        names its files on the machine
    host      its number among the account's hosts: names its namespace and its links
    name      its hostname
    public    its address on the public network
    private   its address in its VPC
    status    "off" when it is to be recovered powered off
"""

from __future__ import annotations


class NetworkBackend:
    """A VPC (its record: id, ip_range, index) as a network on the machine."""

    def ensure_network(self, vpc: dict) -> None: ...

    def remove_network(self, vpc: dict) -> None: ...


class HostBackend:
    """The machinery of a lab host: made (plugged into its networks, booted), powered, filtered
    and destroyed."""

    def create_host(self, host: dict, vpc: dict, public_keys: list[str]) -> None: ...

    def power_off(self, host: dict) -> None: ...

    def shutdown(self, host: dict) -> None: ...

    def power_on(self, host: dict) -> None: ...

    def destroy_host(self, host: dict) -> None: ...

    def apply_firewall(self, host: dict, script: str) -> None: ...

    def recover(self, host: dict, vpc: dict, public_keys: list[str]) -> None: ...


class DiskBackend:
    """A volume (its record: id, name, size_gigabytes) as a block device, and its attachment
    to a host."""

    def create_volume(self, volume: dict) -> None: ...

    def resize_volume(self, volume: dict) -> None: ...

    def attach_volume(self, volume: dict, host: dict) -> None: ...

    def detach_volume(self, volume: dict, host: dict) -> None: ...

    def delete_volume(self, volume: dict) -> None: ...

    def recover_volume(self, volume: dict, hosts: list[dict]) -> None: ...


# What the API-only backend serves as the account's database CA (no lab, no certificate).
NO_CA = "-----BEGIN CERTIFICATE-----\nno lab: no CA\n-----END CERTIFICATE-----\n"


class DatabaseBackend:
    """A managed database cluster's nodes (each a host, made with `HostBackend.create_host`)
    running PostgreSQL or Valkey; the cluster's record: lab/standin/resources/databases.py."""

    def database_ca(self) -> str:
        """The account's CA (PEM): every node's certificate chains to it."""
        return NO_CA

    def start_postgres(self, cluster: dict, node: dict, primary: dict | None) -> None:
        """PostgreSQL on `node`: the primary (`primary` None) or a standby streaming from it."""

    def restore_postgres(self, cluster: dict, node: dict, source: dict) -> None:
        """PostgreSQL on `node` (the version its record says) as a primary holding what the
        server on `source` (another cluster's node, or this one's before an upgrade) holds now."""

    def freeze(self, node: dict) -> None:
        """`node`'s server made read-only, its clients disconnected (an upgrade's cut-over)."""

    def thaw(self, node: dict) -> None:
        """`node`'s server writable again (an upgrade that failed before its cut-over)."""

    def run_sql(self, node: dict, sql: str, database: str = "postgres") -> None:
        """`sql` run as the superuser on `node` (given on stdin: it may carry a password)."""

    def follow_primary(self, cluster: dict, node: dict, primary: dict) -> str:
        """Standby `node` (a read-only node, or another standby of the cluster) made to stream
        from `primary`, the cluster's new primary node: "followed" (re-pointed) or "cloned
        again" (its timeline could not)."""
        return "followed"

    def start_valkey(
        self, cluster: dict, node: dict, primary: dict | None, settings: dict[str, str]
    ) -> None:
        """valkey-server on `node` with `settings` (directive -> value): the primary (`primary`
        None) or a replica of it."""

    def configure_valkey(self, cluster: dict, node: dict, settings: dict[str, str]) -> None:
        """`settings` applied to the running valkey-server on `node` (and kept for its restarts)."""

    def publish_names(self, names: dict[str, str]) -> None:
        """The lab's host names (name -> address) for the app side to resolve."""

    def configure_pools(self, cluster: dict, node: dict) -> None:
        """PgBouncer on `node` serving the cluster's connection pools (`cluster["pools"]`) to
        its users (`cluster["users"]`); stopped when it has none."""

    def node_healthy(self, node: dict) -> bool:
        """Whether `node`'s PostgreSQL answers (the control plane's health check)."""
        return True

    def promote(self, node: dict) -> None:
        """The standby on `node` promoted: it takes writes from now on."""


class LoadBalancerBackend:
    """A load balancer's proxy on its host (made with `HostBackend.create_host`); its record:
    lab/standin/resources/load_balancers.py."""

    def configure_load_balancer(self, lb: dict, targets: list[dict]) -> None:
        """The proxy on `lb`'s host made to serve its forwarding rules over `targets` (each
        `id`: a droplet id, `address`: its private address) as its health check says, without
        dropping a connection."""


class SpacesBackend:
    """Where Spaces and the CDN answer on the machine (lab/standin/spaces.py)."""

    def spaces_address(self) -> str | None:
        """The loopback address the stand-in serves them on over TLS, or None: not served."""
        return None


class Backend(
    NetworkBackend, HostBackend, DiskBackend, DatabaseBackend, LoadBalancerBackend, SpacesBackend
):
    """Every part, doing nothing."""
