"""Where the exporters on the stack's servers listen, and the Prometheus `file_sd` document of
them (the stack output `prometheus_targets`): one target group per exporter and server, so a
replica added appears and a replica removed disappears at the next `pulumi up`.

The `job` labels are the ones rules.yml reads. ssl_exporter is a prober: its groups carry its
probe path as `__metrics_path__`, the address it probes as `__param_target` (and `instance`),
its module as `__param_module`, so the operator's scrape config needs no relabelling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

# Each exporter's own default port (their READMEs), on the server's private address.
EXPORTER_PORTS = {
    "postgres": 9187,  # prometheus-postgres-exporter
    "node": 9100,  # prometheus-node-exporter
    "pgbouncer": 9127,  # pgbouncer_exporter
    "ssl": 9219,  # ssl_exporter
}
# pgBackRest's state has no target of its own: node_exporter's textfile collector serves it
# (host/backup_metrics.py), under the node job.
SSL_MODULE = "postgres"  # ssl_exporter's tcp prober with starttls: postgres
# The role the exporters log in as (pg_monitor; PgBouncer's stats_users): host/monitor.py.
MONITOR_USER = "mastodon_monitor"


def postgres_queries() -> str:
    """The PostgreSQL exporter's custom queries (--extend.query-path)."""
    return resources.files(__package__).joinpath("postgres_queries.yaml").read_text()


@dataclass(frozen=True)
class Server:
    name: str
    role: str  # primary | replica
    address: str  # private


MANAGED_JOB = "do_postgres"  # DigitalOcean's metrics endpoints of a managed cluster


def managed_file_sd(cluster: str, endpoints: Sequence[str]) -> list[dict]:
    """The target group of a managed cluster's metrics endpoints, as the provider reads them
    (`https://<host>:<port>/metrics`, one per node): HTTPS, with the account's basic auth in the
    scrape config (file_sd carries no credentials)."""
    targets = []
    for url in endpoints:
        scheme, _, rest = url.partition("://")
        address, _, path = rest.partition("/")
        if scheme != "https" or path != "metrics":
            raise ValueError(f"unexpected metrics endpoint {url!r}")
        targets.append(address)
    if not targets:
        return []
    labels = {"job": MANAGED_JOB, "cluster": cluster, "__scheme__": "https"}
    return [{"targets": targets, "labels": labels}]


def exporter_jobs(pool: bool) -> tuple[str, ...]:
    """The exporters a server of the stack runs: PgBouncer's with the pool."""
    return tuple(job for job in EXPORTER_PORTS if pool or job != "pgbouncer")


def exporter_ports(pool: bool) -> tuple[int, ...]:
    return tuple(EXPORTER_PORTS[job] for job in exporter_jobs(pool))


def file_sd(
    servers: Sequence[Server], postgres_port: int, pgbouncer_port: int | None
) -> list[dict]:
    """The target groups of every exporter of `servers` (file_sd's JSON/YAML shape)."""
    groups = []
    for server in servers:
        labels = {"server": server.name, "role": server.role}
        for job in exporter_jobs(pgbouncer_port is not None):
            target = f"{server.address}:{EXPORTER_PORTS[job]}"
            if job != "ssl":
                groups.append({"targets": [target], "labels": {"job": job, **labels}})
                continue
            for probed in (postgres_port, pgbouncer_port):
                if probed is None:
                    continue
                where = f"{server.address}:{probed}"
                probe = {"__metrics_path__": "/probe", "__param_target": where,
                         "__param_module": SSL_MODULE, "instance": where}  # fmt: skip
                groups.append({"targets": [target], "labels": {"job": job, **labels, **probe}})
    return groups
