"""Managed PostgreSQL (DigitalOcean): cluster size, standby nodes, the pgBouncer pool and the
read-only node."""

from __future__ import annotations

import re
from typing import Any

from mastodon_data.config.checks import Field, Validation, set_command
from mastodon_data.config.project import DEFAULTS, PROJECT
from mastodon_data.config.records import ManagedPostgresSettings
from mastodon_data.config.topology import SQL_NAME, SQL_NAME_RULE

# Managed database size slugs (`doctl databases options slugs --engine pg`): family, vCPUs, RAM,
# e.g. db-s-2vcpu-4gb, db-intel-1vcpu-2gb, db-amd-2vcpu-4gb, gd-2vcpu-8gb, m-2vcpu-16gb,
# so1_5-2vcpu-16gb. The RAM decides the connection limit below.
DB_SIZE_SLUG = re.compile(r"(?:db-s|db-intel|db-amd|gd|m|m3|so1_5)-(\d+)vcpu-(\d+)gb")
# DigitalOcean: "Clusters provide 25 connections per 1 GiB of RAM. 3 connections per cluster are
# reserved for maintenance, and all remaining connections can be allocated to connection pools."
# (docs.digitalocean.com/products/databases/postgresql/how-to/manage-connection-pools/). So:
#   1 GiB: 22   2 GiB: 47   4 GiB: 97   8 GiB: 197   16 GiB: 397   32 GiB: 797   64 GiB: 1597
CONNECTIONS_PER_GIB = 25
RESERVED_CONNECTIONS = 3
# "Database clusters may have zero, one, or two standby nodes ... with the exception of the
# smallest plan of single node clusters" (docs.digitalocean.com/products/databases/).
NODE_COUNTS = range(1, 4)
SMALLEST_PLAN_GIB = 1
POOL_SIZES = range(1, 10**6)
# Basic plans by RAM (docs.digitalocean.com/products/databases/postgresql/details/pricing/):
# the fix of a cluster too small for Mastodon's clients names the first one large enough.
BASIC_PLANS = (
    "db-s-1vcpu-2gb", "db-s-2vcpu-4gb", "db-s-4vcpu-8gb", "db-s-6vcpu-16gb", "db-s-8vcpu-32gb",
    "db-s-16vcpu-64gb",
)  # fmt: skip


def database_size(key: str) -> Field:
    """A managed database's size slug (PostgreSQL and Valkey take the same ones)."""
    return Field(
        key,
        pattern=DB_SIZE_SLUG,
        what="not a database size slug like db-s-2vcpu-4gb",
        note="sizes: doctl databases options slugs --engine pg",
    )


FIELDS = (
    database_size("dbClusterSize"),
    Field("dbNodeCount", allowed=NODE_COUNTS),
    Field(
        "poolName",
        pattern=SQL_NAME,
        what=f"{SQL_NAME_RULE} (Mastodon connects to it as DB_NAME)",
    ),
    Field("poolSize", example=20, allowed=POOL_SIZES),
    Field("managedReplica", example="true"),
    Field("managedReplicaRegion"),  # its example is the stack's region
)


def connection_limit(size: str) -> int | None:
    """Backend connections DigitalOcean lets pools use on a cluster of `size`, or None."""
    match = DB_SIZE_SLUG.fullmatch(size)
    return int(match.group(2)) * CONNECTIONS_PER_GIB - RESERVED_CONNECTIONS if match else None


def parse_managed(
    v: Validation, mode: str | None, topology: dict[str, Any]
) -> ManagedPostgresSettings | None:
    """Managed PostgreSQL: cluster size, standby nodes, the pgBouncer pool, the read replica;
    the version, region and Mastodon's database and role come from the `topology`."""
    if mode != "managed":
        return None
    region = topology["region"]
    values = v.read(FIELDS, managedReplicaRegion=region or "nyc3")
    size, node_count = values["dbClusterSize"], values["dbNodeCount"]
    check_nodes(v, size if v.ok("dbClusterSize") else None, node_count)
    check_pool(v, size, values["poolSize"], topology["mastodon_clients"])
    replica_region = values["managedReplicaRegion"]
    if replica_region and region is not None and replica_region != region:
        v.bad(
            "managedReplicaRegion",
            replica_region,
            f"not the stack's region {region}: a read-only node elsewhere is reachable only "
            "over the public network (private hostnames work within one region), too far for "
            "Mastodon's reads",
            f"pulumi config rm {PROJECT}:managedReplicaRegion (the replica then runs in {region})",
        )
    if not v.ok(*values):
        return None
    return ManagedPostgresSettings(
        **{key: topology[key] for key in ("postgres_version", "region", "db_name", "db_user")},
        size=size,
        node_count=node_count,
        pool_name=values["poolName"],
        pool_size=values["poolSize"],
        replica=values["managedReplica"],
    )


def check_pool(
    v: Validation, size: str | None, pool_size: int | None, clients: tuple[int, str] | None
) -> None:
    """Mastodon's clients fit in the pool (else they wait for a connection), and the pool in
    the cluster's connection limit, shared by all its pools (unknown for a bad size slug)."""
    limit = connection_limit(size) if size is not None else None
    if pool_size is None or limit is None:
        return
    allows = (
        f"{size} allows: {limit} backend connections across its pools (25 per GiB of RAM, "
        f"{RESERVED_CONNECTIONS} reserved by DigitalOcean)"
    )
    if pool_size > limit:
        fix = set_command("poolSize", min(limit, DEFAULTS["poolSize"]))
        v.bad(
            "poolSize",
            v.value("poolSize"),
            f"larger than {allows}",
            f"{fix}, or a larger dbClusterSize",
        )
    elif clients is not None and clients[0] > pool_size:
        count, sum_text = clients
        what = f"smaller than Mastodon's clients: {sum_text}; the others wait for a connection"
        if count <= limit:
            v.bad("poolSize", pool_size, what, set_command("poolSize", count))
            return
        larger = next((s for s in BASIC_PLANS if connection_limit(s) >= count), None)
        fix = (
            f"{set_command('dbClusterSize', larger)} ({connection_limit(larger)} connections)"
            if larger
            else "a dbClusterSize with more RAM (doctl databases options slugs --engine pg)"
        )
        v.bad(
            "dbClusterSize",
            size,
            f"too small for Mastodon's clients: {sum_text}, more than {allows}",
            f"{fix} and {set_command('poolSize', count)} (or lower pumaProcesses, pumaThreads, "
            "sidekiqThreads, streamingDbPool)",
        )


def check_nodes(v: Validation, size: str | None, node_count: int | None) -> None:
    """One node is allowed with a warning; the smallest plan cannot have standby nodes."""
    if node_count == 1:
        v.warnings.append(
            f"{PROJECT}:dbNodeCount = 1: no standby node, so no automatic failover; DigitalOcean "
            f"maintenance and node failures take the database down. "
            f"For production: {set_command('dbNodeCount', 2)}"
        )
    elif node_count is not None and size is not None:
        gib = int(DB_SIZE_SLUG.fullmatch(size).group(2))
        if gib <= SMALLEST_PLAN_GIB:
            v.bad(
                "dbNodeCount",
                node_count,
                f"the smallest plan ({size}) cannot have standby nodes",
                f"{set_command('dbClusterSize', 'db-s-1vcpu-2gb')} (or larger), or "
                f"{set_command('dbNodeCount', 1)}",
            )
