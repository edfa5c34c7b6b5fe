"""Cloud firewalls: the API's side (rules normalised as DigitalOcean returns them: a port range
"all" is "0", ICMP's ports "0", IPv6 addresses lowercased), and every lab host's packet filter
kept to the firewalls that apply to it (the rules compiled by lab/standin/firewall.py)."""

from __future__ import annotations

import re
import threading
import uuid

from lab.standin.firewall import applies_to, compile_rules

from .base import HOSTNAME, Request, Resource, at, json_body, now_iso, page, unprocessable

PROTOCOLS = ("tcp", "udp", "icmp")


class Firewalls(Resource):
    COLLECTION = "firewalls"
    KIND = "firewall"

    def __init__(self, account):
        super().__init__(account)
        self.sync_lock = threading.Lock()
        self.applied: dict[str, str] = {}  # droplet id -> the nft script in force

    def routes(self):
        return [
            *at("/v2/firewalls", GET=self.list, POST=self.create),
            *at("/v2/firewalls/{id}", GET=self.get, PUT=self.update, DELETE=self.delete),
            *at("/v2/firewalls/{id}/droplets", POST=self.add_droplets, DELETE=self.remove_droplets),
            *at("/v2/firewalls/{id}/tags", POST=self.add_tags, DELETE=self.remove_tags),
        ]

    def normalise_target(self, target: dict, side: str) -> dict:
        """A rule's sources or destinations as the API stores them."""
        out: dict = {}
        if target.get("addresses"):
            out["addresses"] = [str(a).strip().lower() for a in target["addresses"]]
        if target.get("tags"):
            out["tags"] = [self.account.tags.ensure(t) for t in target["tags"]]
        if target.get("droplet_ids"):
            out["droplet_ids"] = [int(i) for i in target["droplet_ids"]]
        for extra in ("load_balancer_uids", "kubernetes_ids"):
            if target.get(extra):
                out[extra] = list(target[extra])
        if not out:
            raise unprocessable(f"each rule needs at least one of its {side}")
        return out

    def normalise_rules(self, rules: list, side: str) -> list[dict]:
        normalised = []
        for rule in rules or []:
            protocol = str(rule.get("protocol") or "").lower()
            if protocol not in PROTOCOLS:
                raise unprocessable(f"protocol {rule.get('protocol')!r}: tcp, udp or icmp")
            ports = str(rule.get("ports") or "").strip().lower()
            if protocol == "icmp" or ports == "all":
                ports = "0"
            if protocol != "icmp" and not re.fullmatch(r"0|\d{1,5}(-\d{1,5})?", ports):
                raise unprocessable(f"ports {rule.get('ports')!r}: a port, a range or all")
            target = self.normalise_target(rule.get(side) or {}, side)
            normalised.append({"protocol": protocol, "ports": ports, side: target})
        return normalised

    def from_body(self, body: dict, firewall: dict) -> dict:
        name = body.get("name") or ""
        if not HOSTNAME.fullmatch(name):
            raise unprocessable("name must be letters, digits, dashes and periods")
        firewall.update(
            name=name,
            inbound_rules=self.normalise_rules(body.get("inbound_rules"), "sources"),
            outbound_rules=self.normalise_rules(body.get("outbound_rules"), "destinations"),
            droplet_ids=[int(i) for i in body.get("droplet_ids") or []],
            tags=[self.account.tags.ensure(t) for t in body.get("tags") or []],
        )
        return firewall

    @staticmethod
    def firewall_json(firewall: dict) -> dict:
        return {
            "id": firewall["id"],
            "name": firewall["name"],
            "status": "succeeded",
            "created_at": firewall["created_at"],
            "pending_changes": [],
            "inbound_rules": firewall["inbound_rules"],
            "outbound_rules": firewall["outbound_rules"],
            "droplet_ids": firewall["droplet_ids"],
            "tags": firewall["tags"],
        }

    def list(self, request: Request):
        firewalls = [self.firewall_json(f) for f in self.items.values()]
        return page(firewalls, "firewalls", request.query)

    def create(self, request: Request):
        ident = str(uuid.uuid4())
        firewall = self.from_body(json_body(request), {"id": ident, "created_at": now_iso()})
        self.items[ident] = firewall
        self.mark_fresh(request, ident)
        self.changed()
        return 202, {"firewall": self.firewall_json(firewall)}

    def get(self, request: Request):
        self.check_fresh(request.params["id"])
        return {"firewall": self.firewall_json(self.find(request.params["id"]))}

    def update(self, request: Request):
        firewall = self.find(request.params["id"])
        self.from_body(json_body(request), firewall)
        self.changed()
        return {"firewall": self.firewall_json(firewall)}

    def delete(self, request: Request):
        self.find(request.params["id"])
        del self.items[request.params["id"]]
        self.changed()
        return 204, None

    def add_droplets(self, request: Request):
        firewall = self.find(request.params["id"])
        for ident in json_body(request).get("droplet_ids") or []:
            if int(ident) not in firewall["droplet_ids"]:
                firewall["droplet_ids"].append(int(ident))
        self.changed()
        return 204, None

    def remove_droplets(self, request: Request):
        firewall = self.find(request.params["id"])
        gone = {int(i) for i in json_body(request).get("droplet_ids") or []}
        firewall["droplet_ids"] = [i for i in firewall["droplet_ids"] if i not in gone]
        self.changed()
        return 204, None

    def add_tags(self, request: Request):
        firewall = self.find(request.params["id"])
        for name in json_body(request).get("tags") or []:
            name = self.account.tags.ensure(name)
            if name not in firewall["tags"]:
                firewall["tags"].append(name)
        self.changed()
        return 204, None

    def remove_tags(self, request: Request):
        firewall = self.find(request.params["id"])
        gone = {t.lower() for t in json_body(request).get("tags") or []}
        firewall["tags"] = [t for t in firewall["tags"] if t.lower() not in gone]
        self.changed()
        return 204, None

    # -- the packet filters -------------------------------------------------------------------
    def changed(self) -> None:
        self.save()
        self.want_sync()

    def want_sync(self) -> None:
        """The packet filters must follow (done by the account once the state lock is free)."""
        self.account.sync_wanted = True

    def resolve(self, target: dict) -> list[str]:
        """A rule's sources/destinations as addresses (tags and droplet ids: both addresses of
        every droplet they name; load balancers: their VPC address)."""
        addresses = list(target.get("addresses") or [])
        for uid in target.get("load_balancer_uids") or []:
            address = self.account.load_balancers.address_of(uid)
            addresses += [f"{address}/32"] if address else []
        ids = {int(i) for i in target.get("droplet_ids") or []}
        tags = {t.lower() for t in target.get("tags") or []}
        for droplet in self.account.droplets.items.values():
            if droplet["id"] in ids or tags & {t.lower() for t in droplet["tags"]}:
                addresses += [f"{droplet['public']}/32", f"{droplet['private']}/32"]
        return addresses

    def sync(self) -> None:
        """Every droplet's packet filter made to match the firewalls that apply to it now."""
        with self.sync_lock:
            with self.account.lock:
                plans = {}
                for ident, droplet in self.account.droplets.items.items():
                    if not droplet.get("host_ready") or droplet["deleting"]:
                        continue
                    firewalls = [f for f in self.items.values() if applies_to(f, droplet)]
                    plans[ident] = (dict(droplet), compile_rules(firewalls, self.resolve))
            for ident, (droplet, script) in plans.items():
                if self.applied.get(ident) != script:
                    self.account.backend.apply_firewall(droplet, script)
                    self.applied[ident] = script
            self.account.databases.sync()  # trusted sources name droplets and tags too
            self.account.database_replicas.sync()
            self.account.load_balancers.sync()  # a tag's droplets are a load balancer's targets

    # -- hooks --------------------------------------------------------------------------------
    def forget_droplet(self, ident: str) -> None:
        self.applied.pop(ident, None)
        for firewall in self.items.values():
            firewall["droplet_ids"] = [i for i in firewall["droplet_ids"] if str(i) != ident]

    def recover(self) -> None:
        self.sync()
