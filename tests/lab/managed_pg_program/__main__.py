"""A small managed PostgreSQL stack of tests/lab/test_managed_pg_standin.py (no pool: the pools
have tests/lab/managed_pool_program): a VPC, a cluster with a standby, a database, a user,
trusted sources, the CA."""

import pulumi
import pulumi_digitalocean as do

config = pulumi.Config()
name = f"mlpg-{pulumi.get_stack()}"
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
db = do.DatabaseDb("db", cluster_id=cluster.id, name="mastodon_production")
user = do.DatabaseUser("user", cluster_id=cluster.id, name="mastodon")
rules = [do.DatabaseFirewallRuleArgs(type="tag", value=config.require("appTag"))]
rules += [
    do.DatabaseFirewallRuleArgs(type="ip_addr", value=cidr)
    for cidr in config.require_object("appCidrs")
]
do.DatabaseFirewall("firewall", cluster_id=cluster.id, rules=rules)
ca = do.get_database_ca_output(cluster_id=cluster.id)

pulumi.export("host", cluster.host)
pulumi.export("private_host", cluster.private_host)
pulumi.export("port", cluster.port)
pulumi.export("admin_password", cluster.password)
pulumi.export("database", db.name)
pulumi.export("user", user.name)
pulumi.export("user_password", user.password)
pulumi.export("ca_cert", ca.certificate)
