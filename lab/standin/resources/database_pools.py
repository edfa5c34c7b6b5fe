"""A managed PostgreSQL cluster's connection pools (`DatabaseConnectionPool`): PgBouncer on port
25061 of every node of the cluster (lab/standin/lab_pools.py), one `[databases]` entry per pool
in its mode and size, logging in to the database as the pool's user. Its records are the
cluster's (`cluster["pools"]`: name -> user, db, mode, size).

Shapes as the provider calls them (the issue 20 spec, §6): the pool answers on the cluster's own
host names at 25061, `connection.database` is the pool's name, `user`/`db`/`mode`/`size` are
echoed verbatim (the provider replaces a pool on any difference). DigitalOcean's limit: 25
backend connections per GiB of the node size, 3 of them reserved, shared by all the cluster's
pools; over it, 422 with a message naming the limit (the stand-in's wording: DigitalOcean's own
text is not published).
"""

from __future__ import annotations

import re

from .base import Request, Resource, at, json_body, not_found, unprocessable
from .databases import DB_SIZES

PORT = 25061
MODES = ("session", "transaction", "statement")
PER_GIB, RESERVED = 25, 3
# DigitalOcean: 3 to 60 characters; the stand-in keeps to what PgBouncer takes unquoted.
POOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{2,59}")


def backend_limit(size: str) -> int:
    """The backend connections a cluster of node size `size` gives its pools."""
    return PER_GIB * DB_SIZES[size] - RESERVED


class DatabasePools(Resource):
    KIND = "connection pool"

    def routes(self):
        base = "/v2/databases/{id}/pools"
        return [
            *at(base, GET=self.list, POST=self.create),
            *at(f"{base}/{{name}}", GET=self.get, DELETE=self.delete),
        ]

    # -- the shapes -------------------------------------------------------------------------
    def connection(self, cluster: dict, name: str, kind: str) -> dict:
        pool = cluster["pools"][name]
        user = pool["user"] or "doadmin"  # no user: the inbound user's; doadmin's shown
        password = cluster["users"][user]["password"]
        host = self.account.databases.host_name(cluster, kind)
        return {
            "uri": f"postgres://{user}:{password}@{host}:{PORT}/{name}?sslmode=require",
            "database": name,
            "host": host,
            "port": PORT,
            "user": user,
            "password": password,
            "ssl": True,
        }

    def pool_json(self, cluster: dict, name: str) -> dict:
        pool = cluster["pools"][name]
        document = {
            "user": pool["user"],
            "name": name,
            "size": pool["size"],
            "db": pool["db"],
            "mode": pool["mode"],
            "connection": self.connection(cluster, name, ""),
            "private_connection": self.connection(cluster, name, "private-"),
        }
        if cluster["num_nodes"] > 1:
            document["standby_connection"] = self.connection(cluster, name, "replica-")
            document["standby_private_connection"] = self.connection(
                cluster, name, "private-replica-"
            )
        return document

    # -- the API ------------------------------------------------------------------------------
    def pools_of(self, request: Request) -> tuple[dict, dict]:
        cluster = self.account.databases.find(request.params["id"])
        return cluster, cluster.setdefault("pools", {})

    def list(self, request: Request):
        cluster, pools = self.pools_of(request)
        return {"pools": [self.pool_json(cluster, name) for name in pools]}

    def get(self, request: Request):
        cluster, pools = self.pools_of(request)
        if request.params["name"] not in pools:
            raise not_found(f"connection pool {request.params['name']}")
        return {"pool": self.pool_json(cluster, request.params["name"])}

    def checked(self, cluster: dict, body: dict) -> dict:
        """The fields of a create request, or the API's refusal."""
        name, mode, size = str(body.get("name") or ""), body.get("mode"), body.get("size")
        db, user = str(body.get("db") or ""), str(body.get("user") or "")
        if not POOL_NAME.fullmatch(name):
            raise unprocessable("name must be 3-60 letters, digits, _ and -")
        if name in cluster["pools"]:
            raise unprocessable(f"a connection pool named {name} already exists")
        if mode not in MODES:
            raise unprocessable(f"mode {mode!r}: one of {', '.join(MODES)}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise unprocessable(f"size {size!r}: a number of connections, at least 1")
        if db not in cluster["dbs"]:
            raise unprocessable(f"database {db!r} does not exist in the cluster")
        if user and user not in cluster["users"]:
            raise unprocessable(f"user {user!r} does not exist in the cluster")
        limit = backend_limit(cluster["size"])
        used = sum(p["size"] for p in cluster["pools"].values())
        if size > limit - used:
            raise unprocessable(
                f"pool size {size} exceeds the {limit - used} connections available on "
                f"{cluster['size']} ({PER_GIB} per GiB, {RESERVED} reserved, {used} used by "
                "other pools)"
            )
        return {"user": user, "db": db, "mode": mode, "size": size, "name": name}

    def create(self, request: Request):
        cluster = self.account.databases.online(request)
        cluster.setdefault("pools", {})
        fields = self.checked(cluster, json_body(request))
        name = fields.pop("name")
        cluster["pools"][name] = fields
        self.save()
        self.apply(cluster)
        return 201, {"pool": self.pool_json(cluster, name)}

    def delete(self, request: Request):
        cluster, pools = self.pools_of(request)
        if pools.pop(request.params["name"], None) is None:
            raise not_found(f"connection pool {request.params['name']}")
        self.save()
        self.apply(cluster)
        return 204, None

    # -- on the machine -----------------------------------------------------------------------
    def apply(self, cluster: dict) -> None:
        """Every ready node's PgBouncer made to serve the cluster's pools and users now (after a
        change of either)."""
        cluster.setdefault("pools", {})
        for node in cluster["nodes"]:
            if node.get("host_ready"):
                self.account.backend.configure_pools(cluster, node)

    def recover(self) -> None:
        """After a restart: PgBouncer back on every node (the nodes' boot starts only
        PostgreSQL)."""
        for cluster in list(self.account.databases.items.values()):
            if cluster.get("pools") and not cluster["deleting"]:
                self.apply(cluster)
