"""The standby's takeover, as DigitalOcean's control plane does it: "If the primary node fails
for any reason, the standby node immediately takes over as the primary while a new primary is
provisioned" (DigitalOcean's high-availability page; it gives no figure).

The model: the primary of every online cluster with a standby is checked every
`Timings.health_check` seconds (1 s); after FAILED_CHECKS failures in a row (3: about 3 s) the
first standby is promoted, the cluster's host names (and so its pools' PgBouncer, which runs on
every node) move to it, other standbys follow it, then the dead node is destroyed and a new
standby cloned from the new primary, so `num_nodes` stays what was asked. The cluster stays
`online` throughout (it takes writes again as soon as the standby is promoted), and nothing the
provider reads changes: the same host names, ports, passwords, metrics endpoints.
"""

from __future__ import annotations

import copy
import time

from .base import Resource
from .databases import HOST_KINDS

FAILED_CHECKS = 3


class DatabaseTakeover(Resource):
    def __init__(self, account):
        super().__init__(account)
        self.failures: dict[str, int] = {}  # cluster id -> failed checks in a row
        self.taking_over: set[str] = set()

    def watched(self, cluster: dict) -> bool:
        """An online PostgreSQL cluster with a standby, all its nodes up, not being taken over
        (a Valkey standby's takeover is not modelled)."""
        return (
            cluster["engine"] == "pg"
            and cluster["status"] == "online"
            and not cluster["deleting"]
            and len(cluster["nodes"]) > 1
            and all(node.get("host_ready") for node in cluster["nodes"])
            and cluster["id"] not in self.taking_over
        )

    def watch(self) -> None:
        databases = self.account.databases
        with self.account.lock:
            primaries = [(c["id"], dict(c["nodes"][0])) for c in databases.items.values()
                         if self.watched(c)]  # fmt: skip
        for ident, primary in primaries:
            if self.account.backend.node_healthy(primary):
                self.failures.pop(ident, None)
                continue
            self.failures[ident] = self.failures.get(ident, 0) + 1
            if self.failures[ident] >= FAILED_CHECKS:
                del self.failures[ident]
                self.taking_over.add(ident)
                self.account.spawn(self.take_over, ident)

    def take_over(self, ident: str) -> None:
        """The first standby promoted, the names moved to it, the dead node replaced."""
        databases = self.account.databases
        try:
            with databases.working(ident):  # a delete meanwhile waits
                with self.account.lock:
                    cluster = databases.items.get(ident)
                    if not cluster or cluster["deleting"]:
                        return
                    dead, successor, *others = [dict(n) for n in cluster["nodes"]]
                started = time.monotonic()
                self.account.backend.promote(successor)
                with self.account.lock:
                    nodes = cluster["nodes"]
                    cluster["nodes"] = [*nodes[1:], nodes[0]]  # the dead node last, until replaced
                    self.save()
                    moved = copy.deepcopy(cluster)
                self.account.publish_names()
                for standby in others:
                    self.account.backend.follow_primary(moved, standby, successor)
                for resource in self.account.resources:
                    resource.primary_moved(moved)
                promoted = time.monotonic() - started
                self.replace(ident, dead)
                self.account.log(
                    f"cluster {ident}: primary {dead['id']} failed; {successor['id']} promoted "
                    f"in {promoted:.1f} s, a new standby in {time.monotonic() - started:.1f} s"
                )
        finally:
            self.taking_over.discard(ident)

    def replace(self, ident: str, dead: dict) -> None:
        """The dead node destroyed, a new standby in its place (its number the cluster's next)."""
        account = self.account
        account.backend.destroy_host(dead)
        with account.lock:
            cluster = account.databases.items[ident]
            vpc = dict(account.vpcs.items[cluster["private_network_uuid"]])
            number = cluster.get("next_node", len(cluster["nodes"]))
            cluster["next_node"] = number + 1
            node = {"id": f"pg-{ident[:8]}-{number}", "name": f"{cluster['name'][:60]}-{number}",
                    "status": "on", **account.machines.place(vpc)}  # fmt: skip
            cluster["nodes"] = [n for n in cluster["nodes"] if n["id"] != dead["id"]] + [node]
            account.firewalls.applied.pop(dead["id"], None)
            self.save()
            snapshot = copy.deepcopy(cluster)
            snapshot["host_names"] = [account.databases.host_name(cluster, k) for k in HOST_KINDS]
            primary = dict(cluster["nodes"][0])
        account.firewalls.sync()  # the primary lets the new node in before it clones
        account.backend.create_host(node, vpc, [])
        account.backend.start_postgres(snapshot, node, primary)
        if snapshot.get("pools"):
            account.backend.configure_pools(snapshot, node)
        with account.lock:
            for record in cluster["nodes"]:
                if record["id"] == node["id"]:
                    record["host_ready"] = True
            self.save()
        account.publish_names()
        account.firewalls.sync()
