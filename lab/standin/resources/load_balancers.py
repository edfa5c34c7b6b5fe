"""Load balancers (`/v2/load_balancers`): each a lab host in its VPC (machines.py) running
HAProxy (lab/standin/lab_load_balancers.py) with a TCP listener per forwarding rule over its
targets, the droplets of its tag or its `droplet_ids`, checked as its health check says.

As DigitalOcean has it (the provider's resource_loadbalancer.go, godo's load_balancers.go,
DigitalOcean's OpenAPI description, specification/resources/load_balancers): a create answers
202 with status `new` and no `ip`; the load balancer is `active` once its proxy runs (the
provider polls for that); `ip` is then its address in the VPC for network INTERNAL, its public
address for EXTERNAL. `tag` and `droplet_ids` exclude each other; with a tag, `droplet_ids` lists
the droplets tagged now, and a droplet tagged, untagged, made or deleted later joins or leaves
the targets with no call to the load balancer. A PUT is a full representation (what it leaves
out goes back to its default). Defaults: the OpenAPI description's, the health check's
thresholds as DigitalOcean's examples answer them (unhealthy 3, healthy 5; the schema's own
defaults say 5 and 3). What is modelled and what not: docs/developers/standin.md.
"""

from __future__ import annotations

import re
import traceback
import uuid

from .base import (
    HOSTNAME,
    ApiError,
    Request,
    Resource,
    at,
    has_tag,
    json_body,
    now_iso,
    page,
    unprocessable,
)
from .catalog import REGIONS, region_json
from .databases import DEFAULT_PROJECT

ENTRY_PROTOCOLS = ("http", "https", "http2", "http3", "tcp", "udp")
TARGET_PROTOCOLS = ("http", "https", "http2", "tcp", "udp")
CHECK_PROTOCOLS = ("http", "https", "tcp")
SIZES = {"lb-small": 1, "lb-medium": 3, "lb-large": 6}
HEALTH_CHECK_DEFAULTS = {
    "protocol": "http",
    "port": 80,
    "path": "/",
    "check_interval_seconds": 10,
    "response_timeout_seconds": 5,
    "unhealthy_threshold": 3,
    "healthy_threshold": 5,
}
HEALTH_CHECK_RANGES = {
    "port": (1, 65535),
    "check_interval_seconds": (3, 300),
    "response_timeout_seconds": (3, 300),
    "unhealthy_threshold": (2, 10),
    "healthy_threshold": (2, 10),
}
FLAGS = ("redirect_http_to_https", "enable_proxy_protocol", "enable_backend_keepalive",
         "disable_lets_encrypt_dns_records")  # fmt: skip
FIREWALL_SOURCE = re.compile(r"(ip:\d+\.\d+\.\d+\.\d+|cidr:\d+\.\d+\.\d+\.\d+/\d{1,2})")
# Fixed once made (the provider replaces the load balancer for these).
IMMUTABLE = ("region", "vpc_uuid", "network", "network_stack", "type")


def whole_number(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def checked_rules(rules) -> list[dict]:
    """The forwarding rules as stored; the stand-in proxies TCP to TCP only."""
    if not isinstance(rules, list) or not rules:
        raise unprocessable("forwarding_rules: at least one forwarding rule")
    checked, ports = [], set()
    for rule in rules:
        entry, target = rule.get("entry_protocol"), rule.get("target_protocol")
        if entry not in ENTRY_PROTOCOLS or target not in TARGET_PROTOCOLS:
            raise unprocessable(f"forwarding rule {rule}: unknown entry or target protocol")
        if (entry == "udp") != (target == "udp"):
            raise unprocessable("a udp forwarding rule needs udp on both sides")
        for key in ("entry_port", "target_port"):
            if not whole_number(rule.get(key), 1, 65535):
                raise unprocessable(f"forwarding rule {key} {rule.get(key)!r}: 1 to 65535")
        if (entry, target) != ("tcp", "tcp") or rule.get("certificate_id"):
            raise unprocessable(f"the stand-in proxies tcp to tcp only, not {entry} to {target}")
        if rule["entry_port"] in ports:
            raise unprocessable(f"entry_port {rule['entry_port']} is used by two rules")
        ports.add(rule["entry_port"])
        checked.append({"entry_protocol": entry, "entry_port": rule["entry_port"],
                        "target_protocol": target, "target_port": rule["target_port"],
                        "certificate_id": "", "tls_passthrough": False})  # fmt: skip
    return checked


def checked_health_check(body) -> dict:
    check = {**HEALTH_CHECK_DEFAULTS, **{k: v for k, v in (body or {}).items() if v is not None}}
    if check["protocol"] not in CHECK_PROTOCOLS:
        raise unprocessable(f"health_check protocol {check['protocol']!r}: http, https or tcp")
    for key, (low, high) in HEALTH_CHECK_RANGES.items():
        if not whole_number(check[key], low, high):
            raise unprocessable(f"health_check {key} {check[key]!r}: {low} to {high}")
    if check["protocol"] == "tcp":
        check["path"] = ""
    elif not str(check["path"]).startswith("/"):
        raise unprocessable(f"health_check path {check['path']!r} must start with /")
    return {key: check[key] for key in HEALTH_CHECK_DEFAULTS}


def checked_firewall(body) -> dict:
    firewall = {"deny": list((body or {}).get("deny") or []),
                "allow": list((body or {}).get("allow") or [])}  # fmt: skip
    for source in firewall["deny"] + firewall["allow"]:
        if not FIREWALL_SOURCE.fullmatch(str(source)):
            raise unprocessable(f"firewall rule {source!r}: ip:<address> or cidr:<network>")
    return firewall


def checked_size(body: dict) -> tuple[int, str]:
    size_unit, slug = body.get("size_unit"), body.get("size")
    if size_unit is None:
        if slug is not None and slug not in SIZES:
            raise unprocessable(f"size {slug!r}: lb-small, lb-medium or lb-large")
        size_unit = SIZES[slug or "lb-small"]
    if not whole_number(size_unit, 1, 100):
        raise unprocessable(f"size_unit {size_unit!r}: 1 to 100")
    return size_unit, next((s for s, n in SIZES.items() if n == size_unit), "")


class LoadBalancers(Resource):
    COLLECTION = "load_balancers"
    KIND = "load balancer"

    def __init__(self, account):
        super().__init__(account)
        self.applied: dict[str, tuple] = {}  # load balancer id -> the proxy's (rules, targets)

    def routes(self):
        base = "/v2/load_balancers"
        return [
            *at(base, GET=self.list, POST=self.create),
            *at(f"{base}/{{id}}", GET=self.get, PUT=self.update, DELETE=self.delete),
        ]

    # -- the shapes -------------------------------------------------------------------------
    def targets(self, lb: dict) -> list[dict]:
        """The droplets behind it now: those of its tag, or those of its droplet_ids."""
        droplets = self.account.droplets.items.values()
        if lb["tag"]:
            chosen = [d for d in droplets if has_tag(d, lb["tag"])]
        else:
            chosen = [d for d in droplets if d["id"] in lb["droplet_ids"]]
        return [d for d in chosen if not d["deleting"]]

    def address(self, lb: dict) -> str:
        if lb["status"] != "active":
            return ""
        return lb["private"] if lb["network"] == "INTERNAL" else lb["public"]

    def lb_json(self, lb: dict) -> dict:
        document = {
            "id": lb["id"],
            "name": lb["name"],
            "ip": self.address(lb),
            "size_unit": lb["size_unit"],
            "type": lb["type"],
            "algorithm": "round_robin",
            "status": lb["status"],
            "created_at": lb["created_at"],
            "forwarding_rules": [dict(r) for r in lb["forwarding_rules"]],
            "health_check": dict(lb["health_check"]),
            "sticky_sessions": {"type": "none"},
            "region": region_json(lb["region"]),
            "tag": lb["tag"],
            "droplet_ids": sorted(d["id"] for d in self.targets(lb)),
            "http_idle_timeout_seconds": lb["http_idle_timeout_seconds"],
            "vpc_uuid": lb["vpc_uuid"],
            "project_id": lb["project_id"],
            "firewall": {
                "deny": list(lb["firewall"]["deny"]),
                "allow": list(lb["firewall"]["allow"]),
            },  # fmt: skip
            "network": lb["network"],
            "network_stack": lb["network_stack"],
            "tls_cipher_policy": lb["tls_cipher_policy"],
            **{flag: lb[flag] for flag in FLAGS},
        }
        if lb["size"]:
            document["size"] = lb["size"]
        return document

    # -- requests -----------------------------------------------------------------------------
    def checked_targets(self, body: dict) -> tuple[str, list[int]]:
        tag, ids = body.get("tag") or "", body.get("droplet_ids") or []
        if tag and ids:
            raise unprocessable("droplet_ids and tag are mutually exclusive")
        if tag:
            return self.account.tags.ensure(tag), []
        for ident in ids:
            if str(ident) not in self.account.droplets.items:
                raise unprocessable(f"droplet {ident} not found")
        return "", [int(i) for i in ids]

    def checked_vpc(self, body: dict, region: str) -> str:
        vpc = self.account.vpcs.items.get(body.get("vpc_uuid") or "")
        if not vpc:
            raise unprocessable(
                f"vpc_uuid {body.get('vpc_uuid')!r}: the stand-in makes load balancers in a VPC "
                "it has (no default VPC)"
            )
        if vpc["region"] != region:
            raise unprocessable(f"vpc {vpc['id']} is in {vpc['region']}, not in {region}")
        return vpc["id"]

    def checked(self, body: dict) -> dict:
        """A create's or an update's fields (every one: what is left out is its default)."""
        name = body.get("name") or ""
        if not HOSTNAME.fullmatch(name):
            raise unprocessable("name must be letters, digits, dashes and periods")
        region = str(body.get("region") or "").lower()
        if region not in REGIONS:
            raise unprocessable(f"region {body.get('region')!r} is not available")
        kind = str(body.get("type") or "REGIONAL").upper()
        if kind != "REGIONAL":
            raise unprocessable(f"type {kind}: the stand-in makes REGIONAL load balancers only")
        network = str(body.get("network") or "EXTERNAL").upper()
        if network not in ("EXTERNAL", "INTERNAL"):
            raise unprocessable(f"network {network!r}: EXTERNAL or INTERNAL")
        if str(body.get("network_stack") or "IPV4").upper() != "IPV4":
            raise unprocessable("network_stack: the stand-in has IPv4 only")
        idle = body.get("http_idle_timeout_seconds") or 60
        if not whole_number(idle, 30, 600):
            raise unprocessable(f"http_idle_timeout_seconds {idle!r}: 30 to 600")
        sticky = (body.get("sticky_sessions") or {}).get("type") or "none"
        if sticky != "none":
            raise unprocessable("sticky_sessions: the stand-in has type none only (tcp rules)")
        policy = str(body.get("tls_cipher_policy") or "DEFAULT").upper()
        if policy not in ("DEFAULT", "STRONG"):
            raise unprocessable(f"tls_cipher_policy {policy!r}: DEFAULT or STRONG")
        size_unit, size = checked_size(body)
        tag, droplet_ids = self.checked_targets(body)
        return {
            "name": name, "region": region, "type": kind, "network": network,
            "network_stack": "IPV4", "size_unit": size_unit, "size": size,
            "vpc_uuid": self.checked_vpc(body, region), "tag": tag, "droplet_ids": droplet_ids,
            "forwarding_rules": checked_rules(body.get("forwarding_rules")),
            "health_check": checked_health_check(body.get("health_check")),
            "firewall": checked_firewall(body.get("firewall")),
            "http_idle_timeout_seconds": idle, "tls_cipher_policy": policy,
            "project_id": body.get("project_id") or DEFAULT_PROJECT,
            **{flag: bool(body.get(flag)) for flag in FLAGS},
        }  # fmt: skip

    def list(self, request: Request):
        shown = [self.lb_json(lb) for lb in self.items.values()]
        return page(shown, "load_balancers", request.query)

    def get(self, request: Request):
        self.check_fresh(request.params["id"])
        return {"load_balancer": self.lb_json(self.find(request.params["id"]))}

    def create(self, request: Request):
        fields = self.checked(json_body(request))
        vpc = self.account.vpcs.items[fields["vpc_uuid"]]
        ident = str(uuid.uuid4())
        lb = {**fields, "id": ident, "status": "new", "created_at": now_iso(),
              **self.account.machines.place(vpc)}  # fmt: skip
        self.items[ident] = lb
        self.mark_fresh(request, ident)
        self.save()
        self.account.spawn(self.run_create, ident)
        return 202, {"load_balancer": self.lb_json(lb)}

    def update(self, request: Request):
        lb = self.find(request.params["id"])
        fields = self.checked(json_body(request))
        for key in IMMUTABLE:
            if fields[key] != lb[key]:
                raise unprocessable(f"{key} cannot be changed after the load balancer is made")
        lb.update(fields)
        self.save()
        self.account.firewalls.want_sync()  # the proxy follows (LoadBalancers.sync)
        return {"load_balancer": self.lb_json(lb)}

    def delete(self, request: Request):
        """Gone at once (the provider does not wait): its proxy's host with it."""
        lb = self.find(request.params["id"])
        if lb["status"] == "new":
            raise ApiError(422, "unprocessable_entity", "the load balancer is still being made")
        self.account.backend.destroy_host(dict(lb))
        del self.items[lb["id"]]
        self.applied.pop(lb["id"], None)
        self.save()
        self.account.firewalls.want_sync()  # firewall rules naming it resolve to nothing now
        return 204, None

    # -- on the machine -----------------------------------------------------------------------
    def run_create(self, ident: str) -> None:
        with self.account.lock:
            lb = dict(self.items[ident])
            vpc = dict(self.account.vpcs.items[lb["vpc_uuid"]])
        self.account.backend.create_host(lb, vpc, [])
        with self.account.lock:
            self.items[ident]["host_ready"] = True
        self.sync()
        with self.account.lock:
            self.items[ident]["status"] = "active"
            self.save()
        self.account.firewalls.sync()  # rules naming its uid let its address in now

    def plans(self) -> dict[str, tuple[dict, tuple]]:
        """Every ready load balancer's proxy as it should be: (the record, (its forwarding
        rules and health check, its targets' ids and private addresses))."""
        plans = {}
        for ident, lb in self.items.items():
            if lb.get("host_ready"):
                targets = tuple((d["id"], d["private"]) for d in self.targets(lb))
                wanted = (repr(lb["forwarding_rules"]), repr(lb["health_check"]),
                          repr(lb["firewall"]), lb["enable_proxy_protocol"], targets)  # fmt: skip
                plans[ident] = (dict(lb), wanted)
        return plans

    def sync(self) -> None:
        """Every proxy made to match its load balancer's rules and targets now (after a change
        of either: called by `Firewalls.sync` and after a create)."""
        with self.working("proxies"):
            with self.account.lock:
                plans = self.plans()
            for ident, (lb, wanted) in plans.items():
                if self.applied.get(ident) == wanted:
                    continue
                targets = [{"id": i, "address": a} for i, a in wanted[-1]]
                try:
                    self.account.backend.configure_load_balancer(lb, targets)
                except Exception:  # noqa: BLE001 - the droplet or tag change goes on; next sync
                    self.account.log(f"load balancer {ident}:\n{traceback.format_exc()}")
                    continue
                self.applied[ident] = wanted

    # -- hooks --------------------------------------------------------------------------------
    def hosts(self) -> list[dict]:
        return list(self.items.values())

    def vpc_members(self, vpc_id: str) -> list[dict]:
        return [
            {"urn": f"do:loadbalancer:{lb['id']}", "name": lb["name"],
             "created_at": lb["created_at"]}
            for lb in self.items.values()
            if lb["vpc_uuid"] == vpc_id
        ]  # fmt: skip

    def address_of(self, ident: str) -> str | None:
        """A firewall rule's `load_balancer_uids` source: the load balancer's VPC address."""
        lb = self.items.get(ident)
        return lb["private"] if lb and lb.get("host_ready") else None

    def watch(self) -> None:
        """A proxy whose configuration failed is tried again (the control plane's rounds)."""
        self.sync()

    def forget_droplet(self, ident: str) -> None:
        for lb in self.items.values():
            lb["droplet_ids"] = [i for i in lb["droplet_ids"] if str(i) != ident]

    def recover(self) -> None:
        """After a restart: the proxies' hosts back (HAProxy starts at their boot), a create cut
        short finished."""
        for ident, lb in list(self.items.items()):
            vpc = dict(self.account.vpcs.items[lb["vpc_uuid"]])
            if lb.get("host_ready"):
                self.account.backend.recover(dict(lb), vpc, [])
            else:
                self.account.spawn(self.run_create, ident)
        self.applied.clear()
        self.sync()
