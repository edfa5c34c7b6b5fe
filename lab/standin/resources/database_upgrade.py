"""A managed PostgreSQL cluster's major upgrade (`PUT /v2/databases/{id}/upgrade`) and its fork
(`POST /v2/databases` with `backup_restore`), for the Databases resource (databases.py).

DigitalOcean answers the upgrade 204 and does it in the background; the provider
(terraform-provider-digitalocean, `resourceDigitalOceanDatabaseClusterUpdate`) sends it when
`version` changes and reads the cluster at once, without waiting. Here the cluster is
`migrating` (DigitalOcean's status list has no other for it) while new nodes on the new version
are made: the old primary is made read-only, its pg_dumpall restored into the new primary, the
host names moved to the new nodes, the standbys cloned from it, the old nodes removed; `version`
changes only then, with `online`. A fork is a new cluster (`forking`, then `online`) holding the
source's data as of the request (DigitalOcean: as of a backup, or the latest), in the version
the source runs. What is not modelled: docs/developers/standin.md.
"""

from __future__ import annotations

import copy
from datetime import datetime

from .base import ApiError, Request, at, json_body, not_found, unprocessable

HOST_KINDS = ("", "private-", "replica-", "private-replica-")
# version -> the image a node runs it on (lab/standin/lab_machines.py): the versions whose
# server the lab really has.
LAB_VERSIONS = {"15": "debian-12-x64", "17": "debian-13-x64"}


class Upgrades:
    """Mixed into Databases: its `items`, `account`, `find`, `save`, `working`."""

    def upgrade_routes(self) -> list:
        return at("/v2/databases/{id}/upgrade", PUT=self.upgrade)

    # -- the upgrade --------------------------------------------------------------------------
    def upgrade(self, request: Request):
        cluster = self.find(request.params["id"])
        target = str(json_body(request).get("version") or "")
        self.check_upgrade(cluster, target)
        cluster["status"], cluster["upgrading_to"] = "migrating", target
        self.save()
        self.account.spawn(self.run_upgrade, cluster["id"])
        return 204, None

    def check_upgrade(self, cluster: dict, target: str) -> None:
        """DigitalOcean's refusals (its texts differ), then what the lab cannot run."""
        if cluster["engine"] != "pg":
            raise unprocessable(f"engine {cluster['engine']} has no major version upgrade here")
        if not target.isdigit() or int(target) <= int(cluster["version"]):
            raise unprocessable(
                f"version {target!r}: a cluster on {cluster['version']} upgrades only to a "
                "newer major version"
            )
        if cluster["status"] != "online" or cluster["deleting"]:
            raise ApiError(
                412, "precondition_failed", f"cluster {cluster['id']} is {cluster['status']}"
            )
        if target not in LAB_VERSIONS or cluster["version"] not in LAB_VERSIONS:
            raise unprocessable(
                f"version {target}: the stand-in runs PostgreSQL {', '.join(LAB_VERSIONS)}"
            )
        if self.account.database_replicas.of_cluster(cluster["id"]):
            raise unprocessable("the stand-in does not upgrade a cluster with read-only nodes")

    def new_nodes(self, cluster: dict, version: str, vpc: dict) -> list[dict]:
        """Nodes for `cluster` on `version` (new hosts: new addresses, as new nodes get)."""
        suffix, ident = f"g{cluster.get('generation', 0) + 1}", cluster["id"]
        return [
            {"id": f"pg-{ident[:8]}-{i}-{suffix}", "name": f"{cluster['name'][:57]}-{i}-{suffix}",
             "status": "on", "image": LAB_VERSIONS[version], "pg_version": version,
             **self.account.machines.place(vpc)}
            for i in range(cluster["num_nodes"])
        ]  # fmt: skip

    def run_upgrade(self, ident: str) -> None:
        with self.working(ident):  # a delete meanwhile waits
            self.upgrade_nodes(ident)

    def upgrade_nodes(self, ident: str) -> None:
        backend = self.account.backend
        with self.account.lock:
            cluster = copy.deepcopy(self.items[ident])
            vpc = dict(self.account.vpcs.items[cluster["private_network_uuid"]])
            new = self.new_nodes(cluster, cluster["upgrading_to"], vpc)
            self.items[ident]["pending_nodes"] = new  # their addresses stay taken
        primary, old = new[0], cluster["nodes"]
        cluster["host_names"] = [self.host_name(cluster, kind) for kind in HOST_KINDS]
        try:
            backend.create_host(primary, vpc, [])
            backend.freeze(old[0])  # the write pause starts
            backend.restore_postgres(cluster, primary, old[0])
        except Exception:
            self.roll_back(ident, primary, old[0])
            raise
        self.switch_nodes(ident, new[:1] + old[1:])  # the write pause ends
        for node in new[1:]:
            backend.create_host(node, vpc, [])
            backend.start_postgres(cluster, node, primary)
        self.switch_nodes(ident, new)
        for node in old:
            backend.destroy_host(node)
        with self.account.lock:
            done = self.items[ident]
            done["version"], done["status"] = done.pop("upgrading_to"), "online"
            done["generation"] = done.get("generation", 0) + 1
            done.pop("pending_nodes", None)
            self.save()

    def roll_back(self, ident: str, new_primary: dict, old_primary: dict) -> None:
        """An upgrade failed before its cut-over: the new primary removed, the old one writable
        again, `online` on the old version (the stand-in's choice: DigitalOcean documents none)."""
        self.account.backend.destroy_host(new_primary)
        self.account.backend.thaw(old_primary)
        with self.account.lock:
            cluster = self.items[ident]
            cluster["status"] = "online"
            cluster.pop("upgrading_to", None)
            cluster.pop("pending_nodes", None)
            self.save()

    def switch_nodes(self, ident: str, nodes: list[dict]) -> None:
        """The cluster's host names, trusted sources and pools on `nodes` from now on."""
        with self.account.lock:
            cluster = self.items[ident]
            cluster["nodes"] = [{**node, "host_ready": True} for node in nodes]
            self.save()
        self.account.publish_names()
        self.account.firewalls.sync()
        self.account.database_pools.apply(cluster)

    # -- the fork -----------------------------------------------------------------------------
    def fork_source(self, body: dict, version: str) -> dict | None:
        """The cluster a create request restores (`backup_restore`), or None."""
        restore = body.get("backup_restore")
        if not restore:
            return None
        name = str(restore.get("database_name") or "")
        source = next((c for c in self.items.values() if c["name"] == name), None)
        if source is None or source["deleting"]:
            raise not_found(f"database cluster {name}")
        if source["engine"] != "pg" or source["status"] != "online":
            raise unprocessable(
                f"database cluster {name} has no backup to restore ({source['status']})"
            )
        self.check_backup_time(restore.get("backup_created_at"), source)
        if version != source["version"]:
            raise unprocessable(
                f"version {version}: the backup of {name} is PostgreSQL {source['version']}"
            )
        return source

    @staticmethod
    def check_backup_time(when, source: dict) -> None:
        if not when:
            return
        try:
            stamp = datetime.fromisoformat(str(when).replace("Z", "+00:00"))
        except ValueError:
            raise unprocessable(f"backup_created_at {when!r} is not an ISO 8601 time") from None
        if stamp < datetime.fromisoformat(source["created_at"].replace("Z", "+00:00")):
            raise not_found(f"backup of {source['name']} at {when}")

    @staticmethod
    def fork_fields(source: dict, nodes: list[dict]) -> dict:
        """What a fork takes from its source: its users and their passwords, its databases, its
        server's version (given to `nodes`)."""
        running = {k: v for k, v in source["nodes"][0].items() if k in ("image", "pg_version")}
        for node in nodes:
            node |= running
        return {
            "status": "forking",
            "fork_of": source["id"],
            "password": source["password"],
            "replication_password": source["replication_password"],
            "users": copy.deepcopy(source["users"]),
            "dbs": list(source["dbs"]),
        }
