"""The read endpoint over the replicas (droplets and hosts mode): each server's health endpoint
(host/health_server.py) answers 200 only for a streaming replica within replicaMaxLagBytes and
replicaMaxLagSeconds; a load balancer (droplets mode) or the operator's HAProxy (hosts mode)
sends new read connections only to those."""

from __future__ import annotations

from typing import Any

from mastodon_data.config.checks import Field, Validation, set_command
from mastodon_data.config.records import POSTGRES_PORT

FIELDS = (
    Field("replicaHealthPort", allowed=range(1024, 65536)),
    Field("replicaMaxLagBytes", allowed=range(0, 2**40 + 1)),
    Field("replicaMaxLagSeconds", allowed=range(1, 3601)),
    Field("replicaLoadBalancer", example="true"),
)


def parse_read_endpoint(v: Validation, pgbouncer_port: int | None) -> dict[str, Any]:
    """The fields of ReplicationSettings and DropletSettings; problems go to `v`."""
    values = v.read(FIELDS)
    port = values["replicaHealthPort"]
    if port in (POSTGRES_PORT, pgbouncer_port):
        v.bad(
            "replicaHealthPort",
            port,
            "the port of PostgreSQL or of the pools",
            set_command("replicaHealthPort", 8008),
        )
    return {
        "replica_health_port": port,
        "replica_max_lag_bytes": values["replicaMaxLagBytes"],
        "replica_max_lag_seconds": values["replicaMaxLagSeconds"],
        "replica_load_balancer": values["replicaLoadBalancer"],
    }
