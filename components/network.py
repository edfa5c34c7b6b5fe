"""The stack's VPC when no droplet tier makes one (managed mode): the managed databases and the
Mastodon droplets meet in it over private addresses."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

from components.config import Settings


class PrivateNetwork(pulumi.ComponentResource):
    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mastodon-data:index:PrivateNetwork", name, None, opts)
        # Same name as the droplet tier's VPC: one VPC per stack, whichever mode made it.
        self.vpc = do.Vpc(
            f"{name}-vpc",
            name=f"mastodon-data-{pulumi.get_stack()}",
            region=settings.region,
            ip_range=settings.vpc_cidr,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"vpc_id": self.vpc.id})
