"""Read-only nodes of managed PostgreSQL clusters (`DatabaseReplica`; issue 20 spec §7, §8).

A read-only node is a lab host of its own in its cluster's VPC, running PostgreSQL on 25060 (TLS
with the account's CA, on its own host names) as a hot standby cloned from the cluster's primary
node and streaming from it. It has its own uuid, which is a database id for `/resize` and
`/firewall` (its own trusted sources, enforced on its host; no rule = open). When the cluster's
primary node changes (the standby's takeover), `primary_moved` points every read-only node of the
cluster at the new one.

Shapes as the provider reads them: `status` "forking", then "online" (the provider waits for
"online", not the "active" of the OpenAPI prose); connection fields on
`<replica name>-do-user-1-0.db.ondigitalocean.com` and `private-…`, port 25060, `doadmin` with
the cluster's password. What is modelled and what is not: docs/developers/standin.md.
"""

from __future__ import annotations

import copy
import uuid

from lab.standin.firewall import compile_trusted_sources

from .base import ApiError, Request, Resource, at, json_body, not_found, now_iso, unprocessable
from .catalog import REGIONS
from .databases import DB_SIZES, NAME, PORT


def primary_node(cluster: dict) -> dict:
    """The cluster's primary node: node 0 (databases.py names it the primary; a takeover puts
    the promoted node first)."""
    return cluster["nodes"][0]


class DatabaseReplicas(Resource):
    COLLECTION = "database_replicas"
    KIND = "read-only node"

    def routes(self):
        base = "/v2/databases/{id}"
        return [
            *at(f"{base}/replicas", GET=self.list, POST=self.create),
            *at(f"{base}/replicas/{{name}}", GET=self.get, DELETE=self.delete),
            *at(f"{base}/resize", PUT=self.resize),
        ]

    # -- the shapes -------------------------------------------------------------------------
    def host_name(self, replica: dict, kind: str = "") -> str:
        return self.account.databases.host_name(replica, kind)

    def replica_json(self, replica: dict) -> dict:
        cluster = self.account.databases.items[replica["cluster_id"]]
        # The connection as the cluster's (doadmin, its password), on the node's own names.
        named = {"name": replica["name"], "password": cluster["password"]}
        return {
            "id": replica["id"],
            "name": replica["name"],
            "region": replica["region"],
            "size": replica["size"],
            "status": replica["status"],
            "created_at": replica["created_at"],
            "private_network_uuid": replica["private_network_uuid"],
            "tags": list(replica["tags"]),
            "storage_size_mib": 0,
            "connection": self.account.databases.connection(named, ""),
            "private_connection": self.account.databases.connection(named, "private-"),
        }

    def of_cluster(self, cluster_id: str) -> list[dict]:
        return [r for r in self.items.values() if r["cluster_id"] == cluster_id]

    def named(self, request: Request) -> dict:
        self.account.databases.find(request.params["id"])
        name = request.params["name"]
        for replica in self.of_cluster(request.params["id"]):
            if replica["name"] == name:
                return replica
        raise not_found(f"{self.KIND} {name}")

    # -- the API ------------------------------------------------------------------------------
    def list(self, request: Request):
        self.account.databases.find(request.params["id"])
        replicas = self.of_cluster(request.params["id"])
        return {"replicas": [self.replica_json(r) for r in replicas]}

    def get(self, request: Request):
        return {"replica": self.replica_json(self.named(request))}

    def checked(self, cluster: dict, body: dict) -> dict:
        """The fields of a create request, or the API's refusal."""
        if cluster["engine"] != "pg":
            raise unprocessable("read-only replicas are only supported for PostgreSQL clusters")
        name, region, size = str(body.get("name") or ""), body.get("region"), body.get("size")
        if not NAME.fullmatch(name):
            raise unprocessable("name must be 3-63 lowercase letters, digits and dashes")
        taken = [c["name"] for c in self.account.databases.items.values()]
        if name in taken + [r["name"] for r in self.items.values()]:
            raise unprocessable(f"a database named {name} already exists")
        if region not in REGIONS:
            raise unprocessable(f"region {region!r} is not available")
        if region != cluster["region"]:
            raise unprocessable(f"the stand-in makes read-only nodes in {cluster['region']} only")
        if size not in DB_SIZES:
            raise unprocessable(f"size {size!r} is not a database size")
        if DB_SIZES[size] < DB_SIZES[cluster["size"]]:
            raise unprocessable(
                f"size {size} is smaller than the cluster's {cluster['size']}: a read-only node "
                "must be at least as large as the cluster's nodes"
            )
        vpc = body.get("private_network_uuid") or cluster["private_network_uuid"]
        if vpc != cluster["private_network_uuid"]:
            raise unprocessable("the stand-in makes read-only nodes in their cluster's VPC only")
        if body.get("storage_size_mib"):
            raise unprocessable("the stand-in does not model storage_size_mib")
        return {"name": name, "region": region, "size": size, "private_network_uuid": vpc}

    def create(self, request: Request):
        cluster = self.account.databases.online(request)  # 404, or 412 until it is online
        fields = self.checked(cluster, json_body(request))
        vpc = self.account.vpcs.items[cluster["private_network_uuid"]]
        ident = str(uuid.uuid4())
        node = {"id": f"ro-{ident[:8]}", "name": fields["name"][:63], "status": "on",
                **self.account.machines.place(vpc)}  # fmt: skip
        replica = {
            **fields,
            "id": ident,
            "cluster_id": cluster["id"],
            "status": "forking",
            "created_at": now_iso(),
            "tags": [self.account.tags.ensure(t) for t in json_body(request).get("tags") or []],
            "node": node,
            "rules": [],
            "deleting": False,
        }
        self.items[ident] = replica
        self.save()
        self.account.spawn(self.run_create, ident)
        return 201, {"replica": self.replica_json(replica)}

    def run_create(self, ident: str) -> None:
        with self.account.lock:
            replica = copy.deepcopy(self.items[ident])
            cluster = copy.deepcopy(self.account.databases.items[replica["cluster_id"]])
            vpc = dict(self.account.vpcs.items[replica["private_network_uuid"]])
        node = replica["node"]
        with self.working(ident):  # a delete meanwhile waits, then removes what was made
            if not self.still_wanted(ident):
                return
            self.account.backend.create_host(node, vpc, [])
            with self.account.lock:
                if not self.still_wanted(ident):
                    return
                self.items[ident]["node"]["host_ready"] = True
            self.account.firewalls.sync()  # its own filter; the cluster's lets it in
            self.account.backend.start_postgres(
                self.as_cluster_node(cluster, replica), node, primary_node(cluster)
            )
        self.account.publish_names()
        with self.account.lock:
            if self.still_wanted(ident):  # a delete may have removed it meanwhile
                self.items[ident]["status"] = "online"
                self.save()

    def still_wanted(self, ident: str) -> bool:
        with self.account.lock:
            return ident in self.items and not self.items[ident]["deleting"]

    def as_cluster_node(self, cluster: dict, replica: dict) -> dict:
        """The cluster as the backend reads it for one of its nodes, with the read-only node's
        own host names (those of its certificate)."""
        names = [self.host_name(replica), self.host_name(replica, "private-")]
        return {**cluster, "host_names": names}

    def delete(self, request: Request):
        self.start_delete(self.named(request))
        return 204, None

    def start_delete(self, replica: dict) -> None:
        if not replica["deleting"]:
            replica["deleting"] = True
            self.save()
            self.account.spawn(self.run_delete, replica["id"])

    def delete_all(self, cluster_id: str) -> None:
        """The cluster is being deleted: its read-only nodes go with it."""
        for replica in self.of_cluster(cluster_id):
            self.start_delete(replica)

    def run_delete(self, ident: str) -> None:
        with self.working(ident):
            with self.account.lock:
                node = dict(self.items[ident]["node"])
            self.account.backend.destroy_host(node)
            with self.account.lock:
                del self.items[ident]
                self.work_locks.pop(ident, None)
                self.account.firewalls.applied.pop(node["id"], None)
                self.save()
        self.account.publish_names()
        self.account.firewalls.sync()  # the cluster's nodes let its addresses in no more

    def resize(self, request: Request):
        """`PUT /v2/databases/{replica uuid}/resize` (sizes are labels here: nothing moves)."""
        replica = self.items.get(request.params["id"])
        if replica is None:
            self.account.databases.find(request.params["id"])
            raise unprocessable("the stand-in resizes read-only nodes only, not clusters")
        cluster = self.account.databases.items[replica["cluster_id"]]
        body = json_body(request)
        size = body.get("size")
        if body.get("num_nodes") != 1:
            raise unprocessable("a read-only node has exactly one node (num_nodes 1)")
        if size not in DB_SIZES or DB_SIZES[size] < DB_SIZES[cluster["size"]]:
            raise unprocessable(f"size {size!r}: at least the cluster's {cluster['size']}")
        if replica["status"] != "online" or replica["deleting"]:
            raise ApiError(412, "precondition_failed", f"{self.KIND} is {replica['status']}")
        replica["size"], replica["status"] = size, "resizing"
        self.save()
        self.account.spawn(self.run_resize, replica["id"])
        return 202, None

    def run_resize(self, ident: str) -> None:
        with self.account.lock:
            if ident in self.items:
                self.items[ident]["status"] = "online"
                self.save()

    # -- the takeover -------------------------------------------------------------------------
    def primary_moved(self, cluster: dict) -> None:
        """Every read-only node of `cluster` made to stream from its (new) primary node: its
        `primary_conninfo` changed and reloaded, or, when its timeline cannot follow the new
        primary's, cloned again. Blocking (a few seconds a node); call it outside the account's
        lock."""
        with self.account.lock:
            cluster = copy.deepcopy(cluster)
            replicas = [
                copy.deepcopy(r)
                for r in self.of_cluster(cluster["id"])
                if r["node"].get("host_ready") and not r["deleting"]
            ]
        for replica in replicas:
            with self.working(replica["id"]):
                how = self.account.backend.follow_primary(
                    self.as_cluster_node(cluster, replica), replica["node"], primary_node(cluster)
                )
            self.account.log(f"read-only node {replica['name']}: {how}")

    # -- trusted sources ----------------------------------------------------------------------
    def addresses_of(self, cluster_id: str) -> list[str]:
        """The addresses of the cluster's read-only nodes (its primary lets them in)."""
        return [f"{r['node'][side]}/32" for r in self.of_cluster(cluster_id)
                for side in ("public", "private")]  # fmt: skip

    def sync(self) -> None:
        """Every read-only node's packet filter made to match its own trusted sources (called
        by `firewalls.sync`, under its lock)."""
        trusted = self.account.databases.trusted_addresses
        with self.account.lock:
            plans = [
                (dict(r["node"]), compile_trusted_sources(trusted(self.rules_holder(r)), [PORT]))
                for r in self.items.values()
                if r["node"].get("host_ready") and not r["deleting"]
            ]
        for node, script in plans:
            if self.account.firewalls.applied.get(node["id"]) != script:
                self.account.backend.apply_firewall(node, script)
                self.account.firewalls.applied[node["id"]] = script

    @staticmethod
    def rules_holder(replica: dict) -> dict:
        """The replica as `Databases.trusted_addresses` reads a cluster (its node its own)."""
        return {"id": replica["id"], "rules": replica["rules"], "nodes": [replica["node"]]}

    # -- hooks --------------------------------------------------------------------------------
    def host_names(self) -> dict[str, str]:
        names = {}
        for replica in self.items.values():
            names[self.host_name(replica)] = replica["node"]["public"]
            names[self.host_name(replica, "private-")] = replica["node"]["private"]
        return names

    def hosts(self) -> list[dict]:
        return [replica["node"] for replica in self.items.values()]

    def vpc_members(self, vpc_id: str) -> list[dict]:
        return [
            {"urn": f"do:dbaas:{r['id']}", "name": r["name"], "created_at": r["created_at"]}
            for r in self.items.values()
            if r["private_network_uuid"] == vpc_id
        ]

    def recover(self) -> None:
        """After a restart: the nodes brought back (PostgreSQL starts at boot and streams
        again); one cut short while forking is not finished, as a cluster's."""
        for replica in list(self.items.values()):
            if replica["deleting"] or replica["cluster_id"] not in self.account.databases.items:
                replica["deleting"] = True
                self.account.spawn(self.run_delete, replica["id"])
                continue
            if replica["node"].get("host_ready"):
                vpc = dict(self.account.vpcs.items[replica["private_network_uuid"]])
                self.account.backend.recover(dict(replica["node"]), vpc, [])
        self.account.publish_names()
        self.account.firewalls.sync()
