"""Managed databases (PostgreSQL): a cluster's nodes are lab hosts in its VPC
(lab/standin/resources/machines.py) running this machine's PostgreSQL 15 on port 25060 with TLS
from the account's CA; `num_nodes` 2 or 3 = a primary and hot standbys streaming from it. A
cluster is "creating" until its nodes are up, then "online". Its databases (owned by `doadmin`),
users (LOGIN roles without grants) and trusted sources (packet filters on every node: no rule =
open) are the real server's.

Shapes and behaviour as the DigitalOcean provider calls and reads them (terraform-provider-
digitalocean's `database` package, godo's databases.go, DigitalOcean's OpenAPI description): every
root object wrapped (`database`, `db`, `user`, `rules`, `ca`), `created_at` RFC 3339, `version`
as sent, a user's `settings` never returned (it would be a permanent diff). What is modelled and
what is not: docs/developers/standin.md. Read-only nodes: database_replicas.py (their trusted
sources are served here, by their uuid); connection pools: database_pools.py; the standby's
takeover: database_takeover.py; engine `valkey`: valkey.py.
"""

from __future__ import annotations

import base64
import copy
import re
import secrets
import uuid

from . import valkey
from .base import ApiError, Request, Resource, at, json_body, not_found, now_iso, unprocessable
from .catalog import REGIONS
from .database_firewall import PORT, TrustedSources
from .database_upgrade import HOST_KINDS, Upgrades

ACCOUNT_NUMBER = 1  # the `do-user-<n>` of the host names
DEFAULT_PROJECT = "a1b2c3d4-0000-4000-8000-000000000001"
# slug: memory GiB (DigitalOcean's database sizes)
DB_SIZES = {
    "db-s-1vcpu-1gb": 1,
    "db-s-1vcpu-2gb": 2,
    "db-s-2vcpu-4gb": 4,
    "db-s-4vcpu-8gb": 8,
    "db-s-6vcpu-16gb": 16,
    "db-s-8vcpu-32gb": 32,
    "db-s-16vcpu-64gb": 64,
}
ENGINES = ("pg", valkey.ENGINE)
NAME = re.compile(r"[a-z][a-z0-9-]{2,62}")
SQL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,62}")
RESERVED_USERS = {"doadmin", "postgres", "standin_replication"}


def new_password() -> str:
    """A password as DigitalOcean's look (letters, digits, `_`, `-`: safe in an SQL literal)."""
    return "AVNS_" + secrets.token_urlsafe(15)


class Databases(Upgrades, TrustedSources, Resource):
    COLLECTION = "databases"
    KIND = "database cluster"

    def routes(self):
        base = "/v2/databases/{id}"
        return [
            *at("/v2/databases", GET=self.list, POST=self.create),
            *at("/v2/databases/metrics/credentials", GET=self.metrics_credentials),
            *at(base, GET=self.get, DELETE=self.delete),
            *at(f"{base}/ca", GET=self.ca),
            *at(f"{base}/dbs", GET=self.pg(self.list_dbs), POST=self.pg(self.create_db)),
            *at(f"{base}/dbs/{{name}}", GET=self.pg(self.get_db), DELETE=self.pg(self.delete_db)),
            *at(f"{base}/users", GET=self.pg(self.list_users), POST=self.pg(self.create_user)),
            *at(
                f"{base}/users/{{name}}",
                GET=self.pg(self.get_user),
                DELETE=self.pg(self.delete_user),
            ),  # fmt: skip
            *at(f"{base}/firewall", GET=self.get_firewall, PUT=self.put_firewall),
            *self.upgrade_routes(),
        ]

    def empty_state(self) -> dict:
        return {**super().empty_state(), "metrics_credentials": {}}

    def metrics_credentials(self, request: Request) -> dict:
        """The account's one pair for every cluster's metrics endpoints (basic auth), made on
        first use and kept."""
        credentials = self.account.state["metrics_credentials"]
        if not credentials:
            credentials |= {
                "basic_auth_username": f"doadmin-metrics-{ACCOUNT_NUMBER}",
                "basic_auth_password": new_password(),
            }
            self.save()
        return {"credentials": dict(credentials)}

    # -- the shapes -------------------------------------------------------------------------
    @staticmethod
    def host_name(cluster: dict, kind: str = "") -> str:
        """kind "" (the primary), "private-", "replica-" or "private-replica-"."""
        return f"{kind}{cluster['name']}-do-user-{ACCOUNT_NUMBER}-0.db.ondigitalocean.com"

    def connection(self, cluster: dict, kind: str) -> dict:
        host, password = self.host_name(cluster, kind), cluster["password"]
        if cluster.get("engine") == valkey.ENGINE:  # a read-only node's record has none: pg
            return valkey.connection(cluster, host)
        return {
            "uri": f"postgres://doadmin:{password}@{host}:{PORT}/defaultdb?sslmode=require",
            "database": "defaultdb",
            "host": host,
            "port": PORT,
            "user": "doadmin",
            "password": password,
            "ssl": True,
        }

    def cluster_json(self, c: dict) -> dict:
        document = {
            "id": c["id"],
            "name": c["name"],
            "engine": c["engine"],
            "version": c["version"],
            "num_nodes": c["num_nodes"],
            "size": c["size"],
            "region": c["region"],
            "status": c["status"],
            "created_at": c["created_at"],
            "private_network_uuid": c["private_network_uuid"],
            "tags": list(c["tags"]),
            "project_id": c["project_id"],
            "storage_size_mib": 0,
            "db_names": list(c["dbs"]),
            "connection": self.connection(c, ""),
            "private_connection": self.connection(c, "private-"),
            "users": [
                self.user_json(c, name, user["role"] == "primary")
                for name, user in c["users"].items()
            ],
            "maintenance_window": {
                "day": "saturday",
                "hour": "08:45:12",
                "pending": False,
                "description": [],
            },
            "metrics_endpoints": [{"host": self.host_name(c), "port": 9273}],
        }
        if c["num_nodes"] > 1:
            document["standby_connection"] = self.connection(c, "replica-")
            document["standby_private_connection"] = self.connection(c, "private-replica-")
            standby = {"host": self.host_name(c, "replica-"), "port": 9273}
            document["metrics_endpoints"].append(standby)
        return document

    @staticmethod
    def user_json(cluster: dict, name: str, password: bool = False) -> dict:
        """A user; its password only when asked (the create's answer, doadmin's in the cluster)."""
        user = cluster["users"][name]
        document = {"name": name, "role": user["role"]}
        if password:
            document["password"] = user["password"]
        return document

    # -- clusters -----------------------------------------------------------------------------
    def list(self, request: Request):
        return {"databases": [self.cluster_json(c) for c in self.items.values()]}

    def get(self, request: Request):
        self.check_fresh(request.params["id"])
        return {"database": self.cluster_json(self.find(request.params["id"]))}

    def checked(self, body: dict) -> dict:
        """The fields of a create request, or the API's refusal."""
        name, engine = str(body.get("name") or ""), body.get("engine")
        if not NAME.fullmatch(name):
            raise unprocessable("name must be 3-63 lowercase letters, digits and dashes")
        if any(c["name"] == name for c in self.items.values()):
            raise unprocessable(f"a database cluster named {name} already exists")
        if engine not in ENGINES:
            raise unprocessable(f"engine {engine!r}: the stand-in makes pg and valkey clusters")
        version = str(body.get("version") or ("15" if engine == "pg" else valkey.VERSIONS[0]))
        if engine == valkey.ENGINE and version not in valkey.VERSIONS:
            raise unprocessable(f"valkey version {version!r} is not available (8)")
        if body.get("region") not in REGIONS:
            raise unprocessable(f"region {body.get('region')!r} is not available")
        if body.get("size") not in DB_SIZES:
            raise unprocessable(f"size {body.get('size')!r} is not a database size")
        nodes = body.get("num_nodes")
        if not isinstance(nodes, int) or not 1 <= nodes <= 3:
            raise unprocessable("num_nodes must be 1, 2 or 3")
        for unsupported in ("storage_autoscale", "do_settings"):
            if body.get(unsupported):
                raise unprocessable(f"the stand-in does not model {unsupported}")
        return {"name": name, "engine": engine, "version": version,
                "size": body["size"], "region": body["region"], "num_nodes": nodes}  # fmt: skip

    def checked_vpc(self, body: dict, region: str) -> dict:
        vpc_id = body.get("private_network_uuid") or ""
        vpc = self.account.vpcs.items.get(vpc_id)
        if not vpc:
            raise unprocessable(
                f"private_network_uuid {vpc_id!r}: the stand-in makes clusters in a VPC it has"
            )
        if vpc["region"] != region:
            raise unprocessable(f"vpc {vpc_id} is in {vpc['region']}, not in {region}")
        return vpc

    def create(self, request: Request):
        body = json_body(request)
        fields = self.checked(body)
        vpc = self.checked_vpc(body, fields["region"])
        source = self.fork_source(body, fields["version"])
        ident, password = str(uuid.uuid4()), new_password()
        nodes = [  # a node's name is its hostname: at most 64 characters
            {"id": f"{fields['engine']}-{ident[:8]}-{i}", "name": f"{fields['name'][:60]}-{i}",
             "status": "on", **self.account.machines.place(vpc)}
            for i in range(fields["num_nodes"])
        ]  # fmt: skip
        cluster = {
            **fields,
            "id": ident,
            "status": "creating",
            "created_at": now_iso(),
            "private_network_uuid": vpc["id"],
            "project_id": body.get("project_id") or DEFAULT_PROJECT,
            "tags": [self.account.tags.ensure(t) for t in body.get("tags") or []],
            "password": password,
            "replication_password": new_password(),
            "nodes": nodes,
            "dbs": ["defaultdb"],
            "users": {"doadmin": {"role": "primary", "password": password}},
            "rules": [],
            "pools": {},
            "deleting": False,
        }
        if source:
            cluster |= self.fork_fields(source, nodes)
        if fields["engine"] == valkey.ENGINE:
            cluster |= valkey.new_cluster_fields(password)
        self.items[ident] = cluster
        self.mark_fresh(request, ident)
        self.save()
        self.account.spawn(self.run_create, ident)
        return 201, {"database": self.cluster_json(cluster)}

    def run_create(self, ident: str) -> None:
        with self.account.lock:
            cluster = copy.deepcopy(self.items[ident])
            cluster["host_names"] = [self.host_name(cluster, kind) for kind in HOST_KINDS]
            vpc = dict(self.account.vpcs.items[cluster["private_network_uuid"]])
        with self.working(ident):  # a delete meanwhile waits, then removes what was made
            primary = cluster["nodes"][0]
            for index, node in enumerate(cluster["nodes"]):
                with self.account.lock:
                    if self.items[ident]["deleting"]:
                        return
                self.account.backend.create_host(node, vpc, [])
                self.start(cluster, node, primary if index else None)
                with self.account.lock:
                    self.items[ident]["nodes"][index]["host_ready"] = True
        self.account.publish_names()
        self.account.firewalls.sync()
        with self.account.lock:
            if ident in self.items and not self.items[ident]["deleting"]:
                self.items[ident]["status"] = "online"
                self.save()

    def start(self, cluster: dict, node: dict, primary: dict | None) -> None:
        source = self.items.get(cluster.get("fork_of", ""))
        if primary is None and source:  # a fork's primary: the source's data
            self.account.backend.restore_postgres(cluster, node, source["nodes"][0])
        elif cluster["engine"] == valkey.ENGINE:
            settings = valkey.server_settings(cluster["valkey_config"], self.memory_gib(cluster))
            self.account.backend.start_valkey(cluster, node, primary, settings)
        else:
            self.account.backend.start_postgres(cluster, node, primary)

    @staticmethod
    def memory_gib(cluster: dict) -> int:
        return DB_SIZES[cluster["size"]]

    def pg(self, handler):
        """`handler` for PostgreSQL clusters; a Valkey cluster gets DigitalOcean's refusal."""

        def only_pg(request: Request):
            cluster = self.find(request.params["id"])
            if cluster["engine"] == valkey.ENGINE:
                raise unprocessable(valkey.NOT_SUPPORTED[request.path.split("/")[4]])
            return handler(request)

        return only_pg

    def delete(self, request: Request):
        cluster = self.find(request.params["id"])
        if not cluster["deleting"]:
            cluster["deleting"] = True
            self.save()
            self.account.spawn(self.run_delete, cluster["id"])
            self.account.database_replicas.delete_all(cluster["id"])
        return 204, None

    def run_delete(self, ident: str) -> None:
        with self.working(ident):
            with self.account.lock:
                nodes = [dict(n) for n in self.items[ident]["nodes"]]
            for node in nodes:
                self.account.backend.destroy_host(node)
            with self.account.lock:
                del self.items[ident]
                self.work_locks.pop(ident, None)
                self.save()
                for node in nodes:
                    self.account.firewalls.applied.pop(node["id"], None)
        self.account.publish_names()

    def online(self, request: Request) -> dict:
        cluster = self.find(request.params["id"])
        if cluster["status"] != "online" or cluster["deleting"]:
            raise ApiError(
                412, "precondition_failed", f"cluster {cluster['id']} is {cluster['status']}"
            )
        return cluster

    # -- the CA -------------------------------------------------------------------------------
    def ca(self, request: Request):
        self.find(request.params["id"])
        pem = self.account.backend.database_ca().encode()
        return {"ca": {"certificate": base64.b64encode(pem).decode()}}

    # -- databases ----------------------------------------------------------------------------
    def list_dbs(self, request: Request):
        return {"dbs": [{"name": n} for n in self.find(request.params["id"])["dbs"]]}

    def get_db(self, request: Request):
        cluster, name = self.find(request.params["id"]), request.params["name"]
        if name not in cluster["dbs"]:
            raise not_found(f"database {name}")
        return {"db": {"name": name}}

    def create_db(self, request: Request):
        cluster = self.online(request)
        name = str(json_body(request).get("name") or "")
        if not SQL_NAME.fullmatch(name):
            raise unprocessable("name must be letters, digits, _ and -, starting with a letter")
        if name in cluster["dbs"]:
            raise unprocessable(f"database {name} already exists")
        self.sql(cluster, f'CREATE DATABASE "{name}" OWNER doadmin')
        cluster["dbs"].append(name)
        self.save()
        return 201, {"db": {"name": name}}

    def delete_db(self, request: Request):
        cluster, name = self.find(request.params["id"]), request.params["name"]
        if name not in cluster["dbs"] or name == "defaultdb":
            raise not_found(f"database {name}")
        self.sql(cluster, f'DROP DATABASE "{name}" WITH (FORCE)')
        cluster["dbs"].remove(name)
        self.save()
        return 204, None

    # -- users --------------------------------------------------------------------------------
    def list_users(self, request: Request):
        cluster = self.find(request.params["id"])
        return {"users": [self.user_json(cluster, name) for name in cluster["users"]]}

    def get_user(self, request: Request):
        cluster, name = self.find(request.params["id"]), request.params["name"]
        if name not in cluster["users"]:
            raise not_found(f"user {name}")
        return {"user": self.user_json(cluster, name)}

    def create_user(self, request: Request):
        cluster = self.online(request)
        body = json_body(request)
        name = str(body.get("name") or "")
        if not SQL_NAME.fullmatch(name) or name in RESERVED_USERS:
            raise unprocessable(f"user name {name!r} is not allowed")
        if name in cluster["users"]:
            raise unprocessable(f"user {name} already exists")
        if body.get("settings") or body.get("mysql_settings"):
            raise unprocessable("the stand-in does not model user settings")
        password = new_password()
        self.sql(cluster, f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
        cluster["users"][name] = {"role": "normal", "password": password}
        self.save()
        self.account.database_pools.apply(cluster)  # PgBouncer knows the cluster's users
        return 201, {"user": self.user_json(cluster, name, password=True)}

    def delete_user(self, request: Request):
        cluster, name = self.find(request.params["id"]), request.params["name"]
        if name not in cluster["users"] or name == "doadmin":
            raise not_found(f"user {name}")
        # What it owns goes to doadmin first (a role that owns objects cannot be dropped).
        for database in cluster["dbs"]:
            self.sql(cluster, f'REASSIGN OWNED BY "{name}" TO doadmin; DROP OWNED BY "{name}"',
                     database)  # fmt: skip
        self.sql(cluster, f'DROP ROLE "{name}"')
        del cluster["users"][name]
        self.save()
        self.account.database_pools.apply(cluster)
        return 204, None

    def sql(self, cluster: dict, sql: str, database: str = "postgres") -> None:
        self.account.backend.run_sql(cluster["nodes"][0], sql, database)

    # -- hooks --------------------------------------------------------------------------------
    def host_names(self) -> dict[str, str]:
        """The clusters' host names: the primary's, then the first standby's."""
        names = {}
        for c in self.items.values():
            nodes = c["nodes"]
            names[self.host_name(c)] = nodes[0]["public"]
            names[self.host_name(c, "private-")] = nodes[0]["private"]
            if len(nodes) > 1:
                names[self.host_name(c, "replica-")] = nodes[1]["public"]
                names[self.host_name(c, "private-replica-")] = nodes[1]["private"]
        return names

    def hosts(self) -> list[dict]:
        return [
            node for c in self.items.values() for node in c["nodes"] + c.get("pending_nodes", [])
        ]

    def vpc_members(self, vpc_id: str) -> list[dict]:
        return [
            {"urn": f"do:dbaas:{c['id']}", "name": c["name"], "created_at": c["created_at"]}
            for c in self.items.values()
            if c["private_network_uuid"] == vpc_id
        ]

    def forget_droplet(self, ident: str) -> None:
        """A droplet rule stays (as on DigitalOcean) but resolves to nothing now."""

    def recover(self) -> None:
        """After a restart: the nodes brought back (their PostgreSQL starts at boot); a cluster
        cut short while creating is not finished (docs/developers/standin.md)."""
        for cluster in list(self.items.values()):
            if cluster["deleting"]:
                self.account.spawn(self.run_delete, cluster["id"])
                continue
            vpc = dict(self.account.vpcs.items[cluster["private_network_uuid"]])
            for node in cluster["nodes"]:
                if node.get("host_ready"):
                    self.account.backend.recover(dict(node), vpc, [])
        self.account.publish_names()
        self.account.firewalls.sync()
