"""The stack's VPC (droplets and managed mode): the database servers or managed databases and
the Mastodon droplets meet in it over private addresses. One per stack, named after it."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

from mastodon_data.config import NetworkSettings


def former_droplet_vpc() -> pulumi.Alias:
    """Before the droplet tier composed this component it made the VPC itself, as "db-vpc" under
    the DropletTier "db". The alias keeps that VPC in a droplets stack made then: without it an
    update would replace the VPC, and with it every droplet (a new vpc_uuid makes a new one)."""
    return pulumi.Alias(
        name="db-vpc", parent=pulumi.create_urn("db", "mastodon-data:index:DropletTier")
    )


class PrivateNetwork(pulumi.ComponentResource):
    """`vpc`: the VPC; `region` and `cidr`: where it is and its range (plain values)."""

    def __init__(
        self, name: str, network: NetworkSettings, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("mastodon-data:index:PrivateNetwork", name, None, opts)
        self.region, self.cidr = network.region, network.cidr
        self.vpc = do.Vpc(
            f"{name}-vpc",
            name=f"mastodon-data-{pulumi.get_stack()}",
            region=network.region,
            ip_range=network.cidr,
            opts=pulumi.ResourceOptions(parent=self, aliases=[former_droplet_vpc()]),
        )
        self.register_outputs({"vpc_id": self.vpc.id})
