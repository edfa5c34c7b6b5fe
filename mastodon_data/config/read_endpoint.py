"""The read endpoint over the replicas (droplets and hosts mode): each server's health endpoint
(host/health_server.py) answers 200 only for a streaming replica within replicaMaxLagBytes and
replicaMaxLagSeconds; a load balancer (droplets mode) or the operator's HAProxy (hosts mode)
sends new read connections only to those."""

from __future__ import annotations

from typing import Any

from mastodon_data.config.checks import Field, Validation, set_command
from mastodon_data.config.records import POSTGRES_PORT

BOUNDS = (
    Field("replicaHealthPort", allowed=range(1024, 65536)),
    Field("replicaMaxLagBytes", allowed=range(0, 2**40 + 1)),
    Field("replicaMaxLagSeconds", allowed=range(1, 3601)),
)
LOAD_BALANCER = Field("replicaLoadBalancer", example="auto", choices=("auto", "true", "false"))
FIELDS = (*BOUNDS, LOAD_BALANCER)
# auto: droplets mode with this many replicas or more gets the load balancer. With one, it
# spreads nothing, and that replica lagging would stop every read where it would serve stale.
AUTO_MIN_REPLICAS = 2


def load_balancer_wanted(v: Validation, mode: str | None, replica_count: int | None) -> bool:
    """replicaLoadBalancer (auto, true or false; a boolean counts) as a decision."""
    value = v.value(LOAD_BALANCER.key)
    text = str(value).lower() if isinstance(value, bool) else str(value)
    problem = LOAD_BALANCER.problem(text)
    if problem:
        v.bad(LOAD_BALANCER.key, value, problem, LOAD_BALANCER.fix("auto"))
        return False
    if text == "auto":
        return mode == "droplets" and (replica_count or 0) >= AUTO_MIN_REPLICAS
    return text == "true"


def parse_read_endpoint(
    v: Validation, pgbouncer_port: int | None, mode: str | None, replica_count: int | None
) -> dict[str, Any]:
    """The fields of ReplicationSettings and DropletSettings; problems go to `v`."""
    values = v.read(BOUNDS)
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
        "replica_load_balancer": load_balancer_wanted(v, mode, replica_count),
    }
