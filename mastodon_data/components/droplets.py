"""Droplets mode: database droplets in the stack's VPC, named by position, one of them the
primary (primaryNode), all with one tag, each with a data volume for PostgreSQL, and a cloud
firewall (22 from the admin CIDRs only, 5432 and the pools' port from the allowed private
sources only, the replica health endpoint from the VPC only); with replicas, the read endpoint
over them (components/read_endpoint.py). During a blue/green upgrade each generation is a tier
of its own, the new one's names carrying its version; their firewalls let each other's nodes
in to PostgreSQL (the logical replication and the repointed pools between them).
"""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

from mastodon_data.components.lifecycle import CREATE_ONLY_NAME, data_droplet, keep_data
from mastodon_data.components.network import PrivateNetwork
from mastodon_data.components.read_endpoint import ReadEndpoint
from mastodon_data.config import DropletSettings, Host, LifecycleSettings
from mastodon_data.monitoring.targets import exporter_ports
from mastodon_data.naming import data_volume_name, volume_device

ANYWHERE = ["0.0.0.0/0", "::/0"]
# Outbound: DNS, package mirrors and PGDG (HTTP/S), time.
OUTBOUND = [("udp", "53"), ("tcp", "53"), ("tcp", "80"), ("tcp", "443"), ("udp", "123")]


def firewall_inbound(
    droplets: DropletSettings,
    nodes_tag: str | None,
    vpc_cidr: str,
    read_endpoint=None,
    peer_tags: tuple = (),
) -> list[dict]:
    """Inbound rules as plain data (tested without Pulumi's engine); `read_endpoint`: the load
    balancer's id (an Output), let in to the read port whatever the allowed sources;
    `peer_tags`: the other generation's tag during a blue/green upgrade."""
    rules = [
        {"protocol": "tcp", "port_range": "22", "source_addresses": list(droplets.admin_cidrs)},
        {
            "protocol": "tcp",
            "port_range": str(droplets.port),
            "source_addresses": list(droplets.postgres_allowed_sources),
        },
    ]
    if droplets.pool:  # PgBouncer: from the same private sources only
        rules.append(
            {
                "protocol": "tcp",
                "port_range": str(droplets.pool.pgbouncer_port),
                "source_addresses": list(droplets.postgres_allowed_sources),
            }
        )
    if droplets.monitoring_sources:  # the exporters: from the operator's Prometheus only
        ports = exporter_ports(pool=droplets.pool is not None)
        rules += [
            {"protocol": "tcp", "port_range": str(port),
             "source_addresses": list(droplets.monitoring_sources)}
            for port in ports
        ]  # fmt: skip
    tags = [*([nodes_tag] if nodes_tag else []), *peer_tags]
    if tags:  # replication connections between the nodes, whatever the allowed sources
        rules.append({"protocol": "tcp", "port_range": str(droplets.port), "source_tags": tags})
    if nodes_tag:
        # The replica health endpoint: the read endpoint's checks, from the VPC only.
        health = str(droplets.replica_health_port)
        rules.append({"protocol": "tcp", "port_range": health, "source_addresses": [vpc_cidr]})
    if read_endpoint is not None:
        rules.append({"protocol": "tcp", "port_range": str(read_port(droplets)),
                      "source_load_balancer_uids": [read_endpoint]})  # fmt: skip
    return rules


def read_port(droplets: DropletSettings) -> int:
    """Where reads go on a database droplet: its pool, or PostgreSQL without pools."""
    return droplets.pool.pgbouncer_port if droplets.pool else droplets.port


def firewall_outbound(port: int, vpc_cidr: str) -> list[dict]:
    rules = [
        {"protocol": protocol, "port_range": ports, "destination_addresses": ANYWHERE}
        for protocol, ports in OUTBOUND
    ]
    rules.append({"protocol": "tcp", "port_range": str(port), "destination_addresses": [vpc_cidr]})
    return rules


def create_only_warnings(
    droplets: DropletSettings, made: list[tuple[str, list[str] | None, str | None]]
) -> list[str]:
    """What a run says when sshKeyIds or image differ from what existing droplets were made with
    (`made`: each droplet's name, keys and image as the state holds them). DigitalOcean uses
    both only when it makes a droplet, and a change would make a new one without the data, so
    the droplets ignore them: the setting reaches only droplets made later. Plain data."""
    warnings = []
    keys = set(droplets.ssh_key_ids)
    stale = [(name, set(old)) for name, old, _ in made if old is not None and set(old) != keys]
    if stale:
        old_keys = set().union(*(old for _, old in stale))
        change = "; ".join(
            f"{what} {', '.join(sorted(ids))}"
            for what, ids in (("added", keys - old_keys), ("removed", old_keys - keys))
            if ids
        )
        warnings.append(
            f"sshKeyIds{f' ({change})' if change else ''} reach only droplets made later, as "
            "other keys would mean a new droplet without its data; these keep the keys they "
            f"were made with: {', '.join(name for name, _ in stale)}. To let a key in on them, "
            "add its public key (the .pub line) to authorizedKeys."
        )
    stale_image = [f"{name} ({old})" for name, _, old in made if old not in (None, droplets.image)]
    if stale_image:
        warnings.append(
            f"image {droplets.image} reaches only droplets made later, as another image would "
            "mean a new droplet without its data; these keep the system they were made from: "
            f"{', '.join(stale_image)}. Upgrade their system on the droplets themselves."
        )
    return warnings


def former_name(index: int) -> str:
    """The droplet's resource name when names carried the role (the first was the primary)."""
    return "primary" if index == 0 else f"replica-{index}"


class DropletTier(pulumi.ComponentResource):
    """Database droplets named by position (db-0 .. db-<replicaCount>) in `network`'s VPC;
    which one is the primary is configuration (primaryNode), so a failover renames nothing.
    `hosts`: the servers the replication steps run on (addresses are Outputs until the droplets
    exist). `suffix`: what the names of a blue/green upgrade's new tier carry (its version);
    the names of its volumes, tag, firewall and read endpoint are given at create only (a
    droplet is renamed in place). The firewall comes with guard(), once every tier exists."""

    def __init__(
        self,
        name: str,
        droplets: DropletSettings,
        network: PrivateNetwork,
        lifecycle: LifecycleSettings,
        opts: pulumi.ResourceOptions | None = None,
        *,
        suffix: str = "",
        warn: bool = True,
    ):
        super().__init__("mastodon-data:index:DropletTier", name, None, opts)
        self.name, self.settings, self.network = name, droplets, network
        self.suffix, stack = suffix, pulumi.get_stack()
        named = pulumi.ResourceOptions.merge(pulumi.ResourceOptions(parent=self), CREATE_ONLY_NAME)
        # One tag for every database droplet: each may stream from whichever is the primary.
        self.tag = do.Tag(f"{name}-nodes", name=f"mastodon-data-{stack}-db{suffix}", opts=named)
        self.droplets: list[do.Droplet] = []
        self.volumes: list[do.Volume] = []
        self.hosts: list[Host] = []
        for index in range(1 + droplets.replica_count):
            role = "primary" if index == lifecycle.primary_node else "replica"
            droplet_name = f"mastodon-db-{stack}{suffix}-{index}"
            droplet = self._droplet(
                name, index, droplet_name, role, self.tag, droplets, network, lifecycle
            )
            self.droplets.append(droplet)
            volume, device = self._data_volume(
                f"{name}-{index}", droplet_name, droplet, network.region, droplets, lifecycle
            )
            addresses = (droplet.ipv4_address, droplet.ipv4_address_private)
            self.hosts.append(
                Host(
                    f"db-{index}",
                    role,
                    *addresses,
                    droplets.ssh_user,
                    data_device=device,
                    data_volume_size=volume.size,
                )  # fmt: skip
            )
        self.read_endpoint = None
        if droplets.replica_count and droplets.replica_load_balancer:
            self.read_endpoint = ReadEndpoint(
                f"{name}-read",
                network.region,
                network.vpc.id,
                self.tag.name,
                read_port(droplets),
                droplets.replica_health_port,
                opts=pulumi.ResourceOptions(parent=self),
                lb_name=f"mastodon-db-{stack}{suffix}-read",
            )
        if warn:  # at preview too: keys and image are then the state's (ignored changes)
            made = [pulumi.Output.all(d.name, d.ssh_keys, d.image) for d in self.droplets]
            pulumi.Output.all(*made).apply(lambda made: self._warn(droplets, made))
        self.register_outputs({})

    def guard(self, peers: tuple[DropletTier, ...] = ()) -> None:
        """One firewall for every database droplet of the tier; `peers`' nodes let in to
        PostgreSQL (the other generation of a blue/green upgrade)."""
        droplets, network = self.settings, self.network
        nodes_tag = self.tag.name if droplets.replica_count else None
        balancer = self.read_endpoint.load_balancer.id if self.read_endpoint else None
        peer_tags = tuple(peer.tag.name for peer in peers)
        inbound = firewall_inbound(droplets, nodes_tag, network.cidr, balancer, peer_tags)
        outbound = firewall_outbound(droplets.port, network.cidr)
        self.firewall = do.Firewall(
            f"{self.name}-firewall",
            name=f"mastodon-db-{pulumi.get_stack()}{self.suffix}",
            droplet_ids=[d.id.apply(int) for d in self.droplets],
            inbound_rules=[do.FirewallInboundRuleArgs(**r) for r in inbound],
            outbound_rules=[do.FirewallOutboundRuleArgs(**r) for r in outbound],
            opts=pulumi.ResourceOptions.merge(
                pulumi.ResourceOptions(parent=self), CREATE_ONLY_NAME
            ),
        )

    def _warn(self, droplets: DropletSettings, made: list) -> None:
        for warning in create_only_warnings(droplets, made):
            pulumi.log.warn(warning, resource=self)

    def _droplet(
        self,
        name: str,
        index: int,
        droplet_name: str,
        role: str,
        tag: do.Tag,
        droplets: DropletSettings,
        network: PrivateNetwork,
        lifecycle: LifecycleSettings,
    ) -> do.Droplet:
        """One database droplet, protected as data, under the name it had when names carried
        the role too (an alias)."""
        return do.Droplet(
            f"{name}-{index}",
            name=droplet_name,
            region=network.region,
            image=droplets.image,
            size=droplets.primary_size if role == "primary" else droplets.replica_size,
            vpc_uuid=network.vpc.id,
            ssh_keys=list(droplets.ssh_key_ids),
            monitoring=True,
            ipv6=False,
            tags=[tag.name],
            opts=data_droplet(
                lifecycle.protect_data,
                pulumi.ResourceOptions(
                    parent=self, aliases=[pulumi.Alias(name=f"{name}-{former_name(index)}")]
                ),
            ),
        )

    def _data_volume(
        self,
        name: str,
        droplet_name: str,
        droplet: do.Droplet,
        region: str,
        droplets: DropletSettings,
        lifecycle: LifecycleSettings,
    ) -> tuple[do.Volume, pulumi.Output]:
        """The droplet's data volume and its attachment; the device path is an Output of the
        attachment, so the steps that use the device wait for it. The volume is left
        unformatted: the volume step formats only a blank device. Attached by a resource of its
        own, so a replaced droplet gets the same volume back; detached before it is attached
        again (a volume has one droplet at a time)."""
        volume_name = data_volume_name(droplet_name)
        volume = do.Volume(
            f"{name}-data",
            name=volume_name,
            region=region,
            size=droplets.data_volume_size,
            # No description: DigitalOcean replaces a volume whose description changes.
            opts=keep_data(
                lifecycle.protect_data,
                pulumi.ResourceOptions.merge(pulumi.ResourceOptions(parent=self), CREATE_ONLY_NAME),
            ),
        )
        self.volumes.append(volume)
        attachment = do.VolumeAttachment(
            f"{name}-data-attachment",
            droplet_id=droplet.id.apply(int),
            volume_id=volume.id,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        # The name the volume was made with (a tier's names are given at create only).
        made = pulumi.Output.all(attachment.id, volume.name)
        return volume, made.apply(lambda a: volume_device(a[1]))
