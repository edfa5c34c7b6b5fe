"""VPCs: the account's private networks (a bridge each on the machine). Their ranges are
private, may not overlap within the account, and come from the stand-in's own pool; a VPC with
members cannot be deleted (403; the provider retries)."""

from __future__ import annotations

import ipaddress
import uuid

from .base import HOSTNAME, ApiError, Request, Resource, at, json_body, now_iso, page, unprocessable
from .catalog import REGIONS

RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


class Vpcs(Resource):
    """By id; a VPC's `index` (1, 2, ...) names its bridge and the operator's link into it."""

    COLLECTION = "vpcs"
    KIND = "vpc"

    def routes(self):
        return [
            *at("/v2/vpcs", GET=self.list, POST=self.create),
            *at("/v2/vpcs/{id}", GET=self.get, DELETE=self.delete),
            *at("/v2/vpcs/{id}", PUT=self.update, PATCH=self.update),
            *at("/v2/vpcs/{id}/members", GET=self.members),
        ]

    @staticmethod
    def vpc_json(vpc: dict) -> dict:
        return {k: vpc[k] for k in ("id", "urn", "name", "description", "region", "ip_range")} | {
            "default": False,
            "created_at": vpc["created_at"],
        }

    def list(self, request: Request):
        return page([self.vpc_json(v) for v in self.items.values()], "vpcs", request.query)

    def create(self, request: Request):
        body = json_body(request)
        name, region = body.get("name") or "", body.get("region") or ""
        if not HOSTNAME.fullmatch(name):
            raise unprocessable("name must be letters, digits, dashes and periods")
        if any(v["name"] == name for v in self.items.values()):
            raise unprocessable(f"a VPC named {name} already exists in this account")
        if region not in REGIONS:
            raise unprocessable(f"region {region!r} is not available")
        ip_range = self.pick_range(body.get("ip_range") or "")
        ident = str(uuid.uuid4())
        vpc = {
            "id": ident,
            "urn": f"do:vpc:{ident}",
            "name": name,
            "description": body.get("description") or "",
            "region": region,
            "ip_range": ip_range,
            "created_at": now_iso(),
            "index": self.account.next_id("vpc"),
        }
        self.account.backend.ensure_network(vpc)
        self.items[ident] = vpc
        self.mark_fresh(request, ident)
        self.save()
        return 201, {"vpc": self.vpc_json(vpc)}

    def pick_range(self, text: str) -> str:
        pool = self.account.vpc_pool
        taken = [ipaddress.ip_network(v["ip_range"]) for v in self.items.values()]
        if not text:
            free = [n for n in pool if not any(n.overlaps(t) for t in taken)]
            if not free:
                raise unprocessable("no free VPC range left in the stand-in's pool")
            return str(free[0])
        try:
            network = ipaddress.ip_network(text)
        except ValueError as exc:
            raise unprocessable(f"ip_range {text!r} is not a valid CIDR: {exc}") from exc
        if network.version != 4 or not any(network.subnet_of(n) for n in RFC1918):
            raise unprocessable("ip_range must be within RFC 1918 private address space")
        if not 16 <= network.prefixlen <= 28:
            raise unprocessable("ip_range must be between /16 and /28")
        clash = next((t for t in taken if network.overlaps(t)), None)
        if clash:
            raise unprocessable(f"ip_range {text} overlaps with VPC range {clash} in this account")
        if not any(network.subnet_of(p) for p in pool):
            owned = ", ".join(str(p) for p in pool)
            raise unprocessable(
                f"ip_range {text}: the stand-in makes only networks it owns ({owned}); "
                "give the stack a vpcCidr among them"
            )
        return str(network)

    def get(self, request: Request):
        self.check_fresh(request.params["id"])
        return {"vpc": self.vpc_json(self.find(request.params["id"]))}

    def update(self, request: Request):
        vpc = self.find(request.params["id"])
        body = json_body(request)
        if "name" in body:
            if not HOSTNAME.fullmatch(body["name"] or ""):
                raise unprocessable("name must be letters, digits, dashes and periods")
            vpc["name"] = body["name"]
        if "description" in body:
            vpc["description"] = body["description"] or ""
        self.save()
        return {"vpc": self.vpc_json(vpc)}

    def all_members(self, vpc_id: str) -> list[dict]:
        return [m for r in self.account.resources for m in r.vpc_members(vpc_id)]

    def members(self, request: Request):
        vpc = self.find(request.params["id"])
        return page(self.all_members(vpc["id"]), "members", request.query)

    def delete(self, request: Request):
        vpc = self.find(request.params["id"])
        if self.all_members(vpc["id"]):
            raise ApiError(403, "forbidden", "Can not delete VPC with members")
        del self.items[vpc["id"]]
        self.account.backend.remove_network(vpc)
        self.save()
        return 204, None
