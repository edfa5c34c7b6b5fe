"""Droplets mode: the VPC, a primary and replica droplets tagged by role, and cloud firewalls
(22 from the admin CIDRs only, 5432 from the allowed private sources only)."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

from components.config import Settings
from components.plan import Node

ANYWHERE = ["0.0.0.0/0", "::/0"]
# Outbound: DNS, package mirrors and PGDG (HTTP/S), time.
OUTBOUND = [("udp", "53"), ("tcp", "53"), ("tcp", "80"), ("tcp", "443"), ("udp", "123")]


def firewall_inbound(settings: Settings, replica_tag: str | None) -> list[dict]:
    """Inbound rules as plain data (tested without Pulumi's engine)."""
    rules = [
        {"protocol": "tcp", "port_range": "22", "source_addresses": list(settings.admin_cidrs)},
        {
            "protocol": "tcp",
            "port_range": str(settings.port),
            "source_addresses": list(settings.postgres_allowed_sources),
        },
    ]
    if replica_tag:  # replication connections, whatever the allowed sources
        rules.append(
            {"protocol": "tcp", "port_range": str(settings.port), "source_tags": [replica_tag]}
        )
    return rules


def firewall_outbound(settings: Settings) -> list[dict]:
    rules = [
        {"protocol": proto, "port_range": port, "destination_addresses": ANYWHERE}
        for proto, port in OUTBOUND
    ]
    rules.append(
        {
            "protocol": "tcp",
            "port_range": str(settings.port),
            "destination_addresses": [settings.vpc_cidr],
        }
    )
    return rules


class DropletTier(pulumi.ComponentResource):
    """VPC, droplets and firewalls; `nodes` feeds the replication steps."""

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mastodon-data:index:DropletTier", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        stack = pulumi.get_stack()
        self.vpc = do.Vpc(
            f"{name}-vpc",
            name=f"mastodon-data-{stack}",
            region=settings.region,
            ip_range=settings.vpc_cidr,
            opts=child,
        )
        tags = {
            role: do.Tag(f"{name}-{role}", name=f"mastodon-data-{stack}-{role}", opts=child)
            for role in ("primary", "replica")
        }
        self.droplets = []
        self.nodes: list[Node] = []
        roles = ["primary"] + ["replica"] * settings.replica_count
        for index, role in enumerate(roles):
            host = "primary" if role == "primary" else f"replica-{index}"
            droplet = do.Droplet(
                f"{name}-{host}",
                name=f"mastodon-db-{stack}-{host}",
                region=settings.region,
                image=settings.image,
                size=settings.primary_size if role == "primary" else settings.replica_size,
                vpc_uuid=self.vpc.id,
                ssh_keys=list(settings.ssh_key_ids),
                monitoring=True,
                ipv6=False,
                tags=[tags[role].name],
                opts=child,
            )
            self.droplets.append(droplet)
            self.nodes.append(
                Node(
                    host,
                    role,
                    droplet.ipv4_address,
                    droplet.ipv4_address_private,
                    settings.ssh_user,
                )
            )
        replica_tag = tags["replica"].name if settings.replica_count else None
        self.firewall = do.Firewall(
            f"{name}-firewall",
            name=f"mastodon-db-{stack}",
            droplet_ids=[d.id.apply(int) for d in self.droplets],
            inbound_rules=[
                do.FirewallInboundRuleArgs(**r) for r in firewall_inbound(settings, replica_tag)
            ],
            outbound_rules=[do.FirewallOutboundRuleArgs(**r) for r in firewall_outbound(settings)],
            opts=child,
        )
        self.register_outputs({"vpc_id": self.vpc.id})
