"""Droplets mode: one read endpoint over every healthy replica, a DigitalOcean load balancer on
the stack's VPC (network INTERNAL) in front of every database droplet's pool (PgBouncer, or
PostgreSQL without pools). Its health check asks each droplet's replica health endpoint
(host/health_server.py), which answers 200 only for a streaming replica within the lag bounds:
the primary, a replica that is down, not streaming or too far behind gets no new connection.
Its targets are the droplets' tag, so a replica added, replaced or promoted needs no change
here. DigitalOcean runs the load balancer highly available (no single point added)."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

# DigitalOcean's minimums: a check every 3 s, 3 s to answer, 2 failures to leave, 2 successes
# to come back: a dead replica gets no new connection within about 9 s.
HEALTH_CHECK = {
    "protocol": "http",
    "path": "/replica",
    "check_interval_seconds": 3,
    "response_timeout_seconds": 3,
    "unhealthy_threshold": 2,
    "healthy_threshold": 2,
}


def load_balancer_args(read_port: int, health_port: int) -> dict:
    """The forwarding rule and the health check as plain data (tested without the engine)."""
    return {
        "forwarding_rules": [
            {
                "entry_protocol": "tcp",
                "entry_port": read_port,
                "target_protocol": "tcp",
                "target_port": read_port,
            }
        ],
        "healthcheck": {**HEALTH_CHECK, "port": health_port},
    }


class ReadEndpoint(pulumi.ComponentResource):
    """`load_balancer`; `address` (its private address, an Output) and `port`."""

    def __init__(
        self,
        name: str,
        region: str,
        vpc_id: pulumi.Input[str],
        droplet_tag: pulumi.Input[str],
        read_port: int,
        health_port: int,
        opts: pulumi.ResourceOptions | None = None,
        lb_name: str | None = None,
    ):
        super().__init__("mastodon-data:index:ReadEndpoint", name, None, opts)
        args = load_balancer_args(read_port, health_port)
        self.load_balancer = do.LoadBalancer(
            f"{name}-lb",
            name=lb_name or f"mastodon-db-{pulumi.get_stack()}-read",
            region=region,
            vpc_uuid=vpc_id,
            network="INTERNAL",
            size_unit=1,
            droplet_tag=droplet_tag,
            forwarding_rules=[
                do.LoadBalancerForwardingRuleArgs(**rule) for rule in args["forwarding_rules"]
            ],
            healthcheck=do.LoadBalancerHealthcheckArgs(**args["healthcheck"]),
            # Given at create only, as the tier's other names (a blue/green upgrade's new tier).
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["name"]),
        )
        self.address = self.load_balancer.ip
        self.port = read_port
        self.register_outputs({"address": self.address})
