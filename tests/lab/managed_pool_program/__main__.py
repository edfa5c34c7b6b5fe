"""The managed PostgreSQL stack of tests/lab/test_managed_pool_standin.py: a VPC, a cluster with
a standby, a database, a user, a connection pool in transaction mode (as the project's managed
component makes it), trusted sources, a read-only node, the CA; `extraPoolSize` adds a second
pool."""

import pulumi
import pulumi_digitalocean as do

config = pulumi.Config()
name = f"mlpt-{pulumi.get_stack()}"
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
pool = do.DatabaseConnectionPool(
    "pool",
    cluster_id=cluster.id,
    name="mastodon_pool",
    mode="transaction",
    size=config.require_int("poolSize"),
    db_name=db.name,
    user=user.name,
)
extra = config.get_int("extraPoolSize")
if extra:
    do.DatabaseConnectionPool(
        "extra",
        cluster_id=cluster.id,
        name="extra_pool",
        mode="session",
        size=extra,
        db_name=db.name,
        user=user.name,
    )
rules = [do.DatabaseFirewallRuleArgs(type="tag", value=config.require("appTag"))]
rules += [
    do.DatabaseFirewallRuleArgs(type="ip_addr", value=cidr)
    for cidr in config.require_object("appCidrs")
]
do.DatabaseFirewall("firewall", cluster_id=cluster.id, rules=rules)
replica = do.DatabaseReplica(
    "replica",
    cluster_id=cluster.id,
    name=f"{name}-pg-replica",
    size="db-s-1vcpu-2gb",
    region="tor1",
    private_network_uuid=vpc.id,
)
ca = do.get_database_ca_output(cluster_id=cluster.id)

pulumi.export("host", cluster.host)
pulumi.export("private_host", cluster.private_host)
pulumi.export("admin_password", cluster.password)
pulumi.export("pool_host", pool.host)
pulumi.export("pool_private_host", pool.private_host)
pulumi.export("pool_port", pool.port)
pulumi.export("pool_name", pool.name)
pulumi.export("pool_user", pool.user)
pulumi.export("pool_password", pool.password)
pulumi.export("replica_private_host", replica.private_host)
pulumi.export("ca_cert", ca.certificate)
