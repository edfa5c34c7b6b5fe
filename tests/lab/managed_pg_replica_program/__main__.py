"""The managed PostgreSQL stack of tests/lab/test_managed_pg_replica_standin.py: a VPC, a
cluster with a standby and trusted sources, a read-only node (`DatabaseReplica`) with trusted
sources of its own (addressed by its uuid, as the project's managed component does), the CA."""

import pulumi
import pulumi_digitalocean as do

config = pulumi.Config()
name = f"mlro-{pulumi.get_stack()}"
vpc = do.Vpc("vpc", name=f"{name}-vpc", region="tor1", ip_range=config.require("vpcCidr"))
cluster = do.DatabaseCluster(
    "pg",
    name=f"{name}-pg",
    engine="pg",
    version="15",
    size="db-s-1vcpu-2gb",
    region="tor1",
    node_count=2,
    private_network_uuid=vpc.id,
)


def rules(cidrs_key: str) -> list:
    found = [do.DatabaseFirewallRuleArgs(type="tag", value=config.require("appTag"))]
    cidrs = config.require_object(cidrs_key)
    return found + [do.DatabaseFirewallRuleArgs(type="ip_addr", value=c) for c in cidrs]


do.DatabaseFirewall("firewall", cluster_id=cluster.id, rules=rules("clusterCidrs"))
replica = do.DatabaseReplica(
    "replica",
    cluster_id=cluster.id,
    name=f"{name}-pg-replica",
    size="db-s-1vcpu-2gb",
    region="tor1",
    private_network_uuid=vpc.id,
)
do.DatabaseFirewall("replica-firewall", cluster_id=replica.uuid, rules=rules("replicaCidrs"))
ca = do.get_database_ca_output(cluster_id=cluster.id)

pulumi.export("private_host", cluster.private_host)
pulumi.export("admin_password", cluster.password)
pulumi.export("replica_host", replica.host)
pulumi.export("replica_private_host", replica.private_host)
pulumi.export("replica_port", replica.port)
pulumi.export("replica_user", replica.user)
pulumi.export("replica_password", replica.password)
pulumi.export("replica_uuid", replica.uuid)
pulumi.export("ca_cert", ca.certificate)
