"""Droplets mode: database droplets in the stack's VPC, named by position, one of them the
primary (primaryNode), all with one tag, each with a data volume for PostgreSQL, and a cloud
firewall (22 from the admin CIDRs only, 5432 and the pools' port from the allowed private
sources only)."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

from mastodon_data.components.lifecycle import data_droplet, keep_data
from mastodon_data.components.network import PrivateNetwork
from mastodon_data.config import DropletSettings, Host, LifecycleSettings
from mastodon_data.naming import data_volume_name, volume_device

ANYWHERE = ["0.0.0.0/0", "::/0"]
# Outbound: DNS, package mirrors and PGDG (HTTP/S), time.
OUTBOUND = [("udp", "53"), ("tcp", "53"), ("tcp", "80"), ("tcp", "443"), ("udp", "123")]


def firewall_inbound(droplets: DropletSettings, nodes_tag: str | None) -> list[dict]:
    """Inbound rules as plain data (tested without Pulumi's engine)."""
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
    if nodes_tag:  # replication connections between the nodes, whatever the allowed sources
        rules.append(
            {"protocol": "tcp", "port_range": str(droplets.port), "source_tags": [nodes_tag]}
        )
    return rules


def firewall_outbound(port: int, vpc_cidr: str) -> list[dict]:
    rules = [
        {"protocol": protocol, "port_range": ports, "destination_addresses": ANYWHERE}
        for protocol, ports in OUTBOUND
    ]
    rules.append({"protocol": "tcp", "port_range": str(port), "destination_addresses": [vpc_cidr]})
    return rules


def former_name(index: int) -> str:
    """The droplet's resource name when names carried the role (the first was the primary)."""
    return "primary" if index == 0 else f"replica-{index}"


class DropletTier(pulumi.ComponentResource):
    """Database droplets named by position (db-0 .. db-<replicaCount>) and their firewall in
    `network`'s VPC; which one is the primary is configuration (primaryNode), so a failover
    renames nothing. `hosts`: the servers the replication steps run on (addresses are Outputs
    until the droplets exist)."""

    def __init__(
        self,
        name: str,
        droplets: DropletSettings,
        network: PrivateNetwork,
        lifecycle: LifecycleSettings,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mastodon-data:index:DropletTier", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        stack = pulumi.get_stack()
        # One tag for every database droplet: each may stream from whichever is the primary.
        tag = do.Tag(f"{name}-nodes", name=f"mastodon-data-{stack}-db", opts=child)
        self.droplets: list[do.Droplet] = []
        self.volumes: list[do.Volume] = []
        self.hosts: list[Host] = []
        for index in range(1 + droplets.replica_count):
            role = "primary" if index == lifecycle.primary_node else "replica"
            droplet_name = f"mastodon-db-{stack}-{index}"
            droplet = self._droplet(
                name, index, droplet_name, role, tag, droplets, network, lifecycle
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
        inbound = firewall_inbound(droplets, tag.name if droplets.replica_count else None)
        self.firewall = do.Firewall(
            f"{name}-firewall",
            name=f"mastodon-db-{stack}",
            droplet_ids=[d.id.apply(int) for d in self.droplets],
            inbound_rules=[do.FirewallInboundRuleArgs(**r) for r in inbound],
            outbound_rules=[
                do.FirewallOutboundRuleArgs(**r)
                for r in firewall_outbound(droplets.port, network.cidr)
            ],
            opts=child,
        )
        self.register_outputs({})

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
            opts=keep_data(lifecycle.protect_data, pulumi.ResourceOptions(parent=self)),
        )
        self.volumes.append(volume)
        attachment = do.VolumeAttachment(
            f"{name}-data-attachment",
            droplet_id=droplet.id.apply(int),
            volume_id=volume.id,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        return volume, attachment.id.apply(lambda _: volume_device(volume_name))
