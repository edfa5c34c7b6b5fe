"""A managed database's trusted sources (`/v2/databases/{id}/firewall`, for a cluster or a
read-only node by its uuid), enforced as packet filters on every node: no rule = open, as on
DigitalOcean. A part of `Databases` (databases.py)."""

from __future__ import annotations

import ipaddress
import uuid

from lab.standin.firewall import compile_trusted_sources

from . import valkey
from .base import Request, json_body, not_found, now_iso, unprocessable

PORT = 25060  # PostgreSQL's
POOL_PORT = 25061  # PgBouncer's (database_pools.py): trusted sources cover both
RULE_TYPES = ("droplet", "k8s", "ip_addr", "tag", "app")


class TrustedSources:
    def with_rules(self, ident: str) -> dict:
        """A cluster, or a read-only node by its uuid: its trusted sources are its own."""
        record = self.items.get(ident) or self.account.database_replicas.items.get(ident)
        if not record:
            raise not_found(f"{self.KIND} {ident}")
        return record

    def get_firewall(self, request: Request):
        cluster = self.with_rules(request.params["id"])
        return {"rules": [{**rule, "cluster_uuid": cluster["id"]} for rule in cluster["rules"]]}

    def put_firewall(self, request: Request):
        cluster = self.with_rules(request.params["id"])
        rules = json_body(request).get("rules") or []
        if len(rules) > 100:
            raise unprocessable("a cluster has at most 100 trusted sources")
        kept = {(r["type"], r["value"]): r for r in cluster["rules"]}
        new = []
        for rule in rules:
            kind, value = rule.get("type"), str(rule.get("value") or "")
            if kind not in RULE_TYPES or not value:
                raise unprocessable(f"rule type {kind!r}: one of {', '.join(RULE_TYPES)}")
            if kind == "droplet" and not value.isdigit():
                raise unprocessable(f"droplet {value!r}: a droplet id")
            if kind == "ip_addr":
                try:
                    if ipaddress.ip_network(value, strict=False).version != 4:
                        raise unprocessable(f"ip_addr {value}: IPv6 is not supported")
                except ValueError as err:
                    raise unprocessable(f"ip_addr {value!r} is not an address") from err
            old = kept.get((kind, value))
            old = old or {"uuid": str(uuid.uuid4()), "created_at": now_iso()}
            new.append({"uuid": old["uuid"], "type": kind, "value": value,
                        "created_at": old["created_at"]})  # fmt: skip
        cluster["rules"] = new
        self.save()
        self.account.firewalls.want_sync()
        return 204, None

    def trusted_addresses(self, cluster: dict) -> list[str] | None:
        """The addresses its rules let in (its own nodes and read-only nodes too, for
        replication); None: open."""
        if not cluster["rules"]:
            return None
        target = {
            "addresses": [r["value"] for r in cluster["rules"] if r["type"] == "ip_addr"],
            "droplet_ids": [r["value"] for r in cluster["rules"] if r["type"] == "droplet"],
            "tags": [r["value"] for r in cluster["rules"] if r["type"] == "tag"],
        }
        nodes = cluster["nodes"] + cluster.get("pending_nodes", [])  # an upgrade's new ones
        own = [f"{n[side]}/32" for n in nodes for side in ("public", "private")]
        own += self.account.database_replicas.addresses_of(cluster["id"])
        return own + self.account.firewalls.resolve(target)

    @staticmethod
    def ports(cluster: dict) -> list[int]:
        """The ports its trusted sources guard."""
        return list(valkey.PORTS) if cluster.get("engine") == valkey.ENGINE else [PORT, POOL_PORT]

    def sync(self) -> None:
        """Every node's packet filter made to match its cluster's trusted sources now (called
        by `firewalls.sync`, under its lock)."""
        with self.account.lock:
            plans = [
                (dict(node), compile_trusted_sources(self.trusted_addresses(c), self.ports(c)))
                for c in self.items.values()
                if not c["deleting"]
                for node in c["nodes"]
                if node.get("host_ready")
            ]
        for node, script in plans:
            if self.account.firewalls.applied.get(node["id"]) != script:
                self.account.backend.apply_firewall(node, script)
                self.account.firewalls.applied[node["id"]] = script
