"""The stand-in's account: the DigitalOcean API v2 resources droplets mode uses, their state and
their behaviour (what the API returns, normalises, refuses, and how long its work takes).

Pure request handling: `Account.handle(method, path, query, body)` -> (status, document,
headers). What happens on the machine (lab hosts, packet filtering) is the `backend`'s job, run
in background threads as the real API does its work after answering (a droplet is "new", then
"active"; an action is "in-progress", then "completed").

Known behaviour of the real API modelled here (docs/developers/standin.md, "Fidelity";
terraform-provider-digitalocean):
- a firewall rule's port range "all" is stored and returned as "0" (ICMP: "0" too); IPv6
  addresses come back lowercased;
- tag names compare case-insensitively (the first spelling is kept and returned);
- a droplet is locked while an action runs ("Droplet already has a pending event"); power
  actions refuse a droplet already in that state; a resize needs it off and cannot shrink the
  disk; a VPC with members cannot be deleted (403, the provider retries); VPC ranges are
  private and may not overlap within the account; the droplet quota (25);
- a deleted droplet answers until it is gone, then 404 (the provider polls for that).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

from lab.standin import catalog
from lab.standin.firewall import applies_to, compile_rules

NOT_FOUND = "The resource you were accessing could not be found."
TAG_NAME = re.compile(r"[A-Za-z0-9:_.-]{1,255}")
DROPLET_NAME = re.compile(r"[A-Za-z0-9.-]{1,255}")
VPC_NAME = re.compile(r"[A-Za-z0-9.-]{1,255}")
FIREWALL_NAME = re.compile(r"[A-Za-z0-9.-]{1,255}")
PROTOCOLS = ("tcp", "udp", "icmp")
RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


class ApiError(Exception):
    def __init__(self, status: int, ident: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.ident, self.message = status, ident, message
        self.headers = headers or {}


def not_found(what: str = "") -> ApiError:
    return ApiError(404, "not_found", NOT_FOUND + (f" ({what})" if what else ""))


def unprocessable(message: str) -> ApiError:
    return ApiError(422, "unprocessable_entity", message)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Timings:
    """Seconds the stand-in's work takes at least (the provider's own waits come on top:
    it looks again only after 10 s)."""

    boot: float = 2.0  # droplet create -> active (plus the lab host's making)
    actions: dict = field(
        default_factory=lambda: {
            "power_off": 1.0,
            "shutdown": 2.0,
            "power_on": 0.0,  # the boot itself
            "reboot": 0.0,
            "power_cycle": 0.0,
            "resize": 3.0,
            "rename": 0.5,
            "attach": 1.0,
            "detach": 1.0,
        }
    )
    default_action: float = 1.0


@dataclass
class Faults:
    """Switches for the real API's eventual consistency and limits (per token, or "*")."""

    not_found_after_create: dict = field(default_factory=dict)  # collection -> n GETs
    rate_limit_every: int = 0  # every n-th request answers 429
    retry_after: int = 1  # seconds, in the 429's Retry-After
    slow_actions: float = 0.0  # seconds added to every action and to droplet creation

    @classmethod
    def from_json(cls, document: dict) -> Faults:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(document) - known
        if unknown:
            raise ValueError(f"unknown fault switches: {sorted(unknown)} (known: {sorted(known)})")
        return cls(**document)


class Backend:
    """What the account's resources are on the machine. This one: nothing (tests of the API)."""

    def ensure_network(self, vpc: dict) -> None: ...

    def remove_network(self, vpc: dict) -> None: ...

    def create_host(self, droplet: dict, vpc: dict, public_keys: list[str]) -> None: ...

    def power_off(self, droplet: dict) -> None: ...

    def shutdown(self, droplet: dict) -> None: ...

    def power_on(self, droplet: dict) -> None: ...

    def destroy_host(self, droplet: dict) -> None: ...

    def apply_firewall(self, droplet: dict, script: str) -> None: ...

    def recover(self, droplet: dict, vpc: dict, public_keys: list[str]) -> None: ...

    def create_volume(self, volume: dict) -> None: ...

    def resize_volume(self, volume: dict) -> None: ...

    def attach_volume(self, volume: dict, droplet: dict) -> None: ...

    def detach_volume(self, volume: dict, droplet: dict) -> None: ...

    def delete_volume(self, volume: dict) -> None: ...

    def recover_volume(self, volume: dict, droplets: list[dict]) -> None: ...


@dataclass
class Request:
    method: str
    path: str
    query: dict
    body: dict | None
    token: str
    params: dict = field(default_factory=dict)


Route = tuple[str, re.Pattern, str, Callable]


def key_fingerprint(public_key: str) -> str:
    """MD5 fingerprint of an OpenSSH public key, as DigitalOcean shows it (aa:bb:...)."""
    import base64

    parts = public_key.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")):
        raise unprocessable("Key invalid type, we support 'ssh-rsa', 'ssh-ed25519', 'ecdsa-...'")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError as exc:
        raise unprocessable("Key invalid, the key is not base64") from exc
    digest = hashlib.md5(blob).hexdigest()  # noqa: S324 - the fingerprint DigitalOcean uses
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


class Account:
    """One DigitalOcean account (team) and its region-wide networks."""

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        public_network: str = "10.241.0.0/24",
        vpc_pool: tuple[str, ...] = ("10.240.0.0/24",),
        state_file: Path | None = None,
        timings: Timings | None = None,
        log: Callable[[str], None] = print,
    ):
        self.backend = backend or Backend()
        self.public_network = ipaddress.ip_network(public_network)
        self.vpc_pool = tuple(ipaddress.ip_network(n) for n in vpc_pool)
        self.state_file = state_file
        self.timings = timings or Timings()
        self.log = log
        self.lock = threading.RLock()
        self.firewall_lock = threading.Lock()
        self.faults: dict[str, Faults] = {}
        self.request_count: dict[str, int] = {}
        self.fresh: dict[tuple[str, str], int] = {}  # (collection, id) -> 404s still to give
        self.applied: dict[str, str] = {}  # droplet id -> the nft script in force
        self.threads: list[threading.Thread] = []
        self.sync_wanted = False
        self.state = self._empty()
        if state_file and state_file.exists():
            self.state = json.loads(state_file.read_text())
        self.routes: list[Route] = []
        self._route_table()

    # ---------------------------------------------------------------------------------------
    # state

    @staticmethod
    def _empty() -> dict:
        return {
            "seq": {"droplet": 0, "action": 0, "key": 0, "host": 0, "vpc": 0},
            "vpcs": {},
            "tags": {},
            "keys": {},
            "droplets": {},
            "actions": {},
            "firewalls": {},
            "volumes": {},
            "public_cursor": 0,
            "vpc_cursor": {},
        }

    def save(self) -> None:
        if not self.state_file:
            return
        with self.lock:  # one writer at a time: requests and background work both save
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
            tmp.replace(self.state_file)

    def next_id(self, kind: str) -> int:
        self.state["seq"][kind] += 1
        return self.state["seq"][kind]

    def faults_for(self, token: str) -> Faults:
        return self.faults.get(token) or self.faults.get("*") or Faults()

    # ---------------------------------------------------------------------------------------
    # routing

    def _route_table(self) -> None:
        table = [
            ("GET", "/v2/account", self.get_account),
            ("GET", "/v2/regions", self.list_regions),
            ("GET", "/v2/sizes", self.list_sizes),
            ("GET", "/v2/images/{image}", self.get_image),
            ("GET", "/v2/vpcs", self.list_vpcs),
            ("POST", "/v2/vpcs", self.create_vpc),
            ("GET", "/v2/vpcs/{id}", self.get_vpc),
            ("PUT", "/v2/vpcs/{id}", self.update_vpc),
            ("PATCH", "/v2/vpcs/{id}", self.update_vpc),
            ("DELETE", "/v2/vpcs/{id}", self.delete_vpc),
            ("GET", "/v2/vpcs/{id}/members", self.vpc_members),
            ("GET", "/v2/tags", self.list_tags),
            ("POST", "/v2/tags", self.create_tag),
            ("GET", "/v2/tags/{name}", self.get_tag),
            ("DELETE", "/v2/tags/{name}", self.delete_tag),
            ("POST", "/v2/tags/{name}/resources", self.tag_resources),
            ("DELETE", "/v2/tags/{name}/resources", self.untag_resources),
            ("GET", "/v2/account/keys", self.list_keys),
            ("POST", "/v2/account/keys", self.create_key),
            ("GET", "/v2/account/keys/{key}", self.get_key),
            ("PUT", "/v2/account/keys/{key}", self.update_key),
            ("DELETE", "/v2/account/keys/{key}", self.delete_key),
            ("GET", "/v2/droplets", self.list_droplets),
            ("POST", "/v2/droplets", self.create_droplet),
            ("DELETE", "/v2/droplets", self.delete_droplets_by_tag),
            ("GET", "/v2/droplets/{id}", self.get_droplet),
            ("DELETE", "/v2/droplets/{id}", self.delete_droplet),
            ("GET", "/v2/droplets/{id}/actions", self.list_droplet_actions),
            ("POST", "/v2/droplets/{id}/actions", self.droplet_action),
            ("GET", "/v2/droplets/{id}/actions/{action}", self.get_droplet_action),
            ("GET", "/v2/actions/{action}", self.get_action),
            ("GET", "/v2/firewalls", self.list_firewalls),
            ("POST", "/v2/firewalls", self.create_firewall),
            ("GET", "/v2/firewalls/{id}", self.get_firewall),
            ("PUT", "/v2/firewalls/{id}", self.update_firewall),
            ("DELETE", "/v2/firewalls/{id}", self.delete_firewall),
            ("POST", "/v2/firewalls/{id}/droplets", self.firewall_add_droplets),
            ("DELETE", "/v2/firewalls/{id}/droplets", self.firewall_remove_droplets),
            ("POST", "/v2/firewalls/{id}/tags", self.firewall_add_tags),
            ("DELETE", "/v2/firewalls/{id}/tags", self.firewall_remove_tags),
            ("GET", "/v2/volumes", self.list_volumes),
            ("POST", "/v2/volumes", self.create_volume),
            ("GET", "/v2/volumes/{id}", self.get_volume),
            ("DELETE", "/v2/volumes/{id}", self.delete_volume),
            ("POST", "/v2/volumes/{id}/actions", self.volume_action),
            ("POST", "/v2/volumes/actions", self.volume_action_by_name),
            ("GET", "/v2/volumes/{id}/actions/{action}", self.get_volume_action),
            ("GET", "/v2/spaces/keys", self.list_spaces_keys),
            ("POST", "/v2/spaces/keys", self.create_spaces_key),
            ("GET", "/v2/spaces/keys/{key}", self.get_spaces_key),
            ("PUT", "/v2/spaces/keys/{key}", self.update_spaces_key),
            ("DELETE", "/v2/spaces/keys/{key}", self.delete_spaces_key),
            ("GET", "/v2/cdn/endpoints", self.list_cdns),
            ("POST", "/v2/cdn/endpoints", self.create_cdn),
            ("GET", "/v2/cdn/endpoints/{id}", self.get_cdn),
            ("PUT", "/v2/cdn/endpoints/{id}", self.update_cdn),
            ("DELETE", "/v2/cdn/endpoints/{id}", self.delete_cdn),
        ]
        for method, template, handler in table:
            pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
            self.routes.append((method, re.compile(f"^{pattern}/?$"), template, handler))

    def endpoints(self) -> list[str]:
        return [f"{method} {template}" for method, _, template, _ in self.routes]

    def match(self, method: str, path: str) -> tuple[str | None, Callable | None, dict]:
        for route_method, pattern, template, handler in self.routes:
            found = pattern.match(path)
            if found and route_method == method:
                return template, handler, {k: unquote(v) for k, v in found.groupdict().items()}
        return None, None, {}

    def handle(self, request: Request) -> tuple[int, dict | None, dict]:
        """(status, document, extra headers); ApiError for the API's refusals."""
        faults = self.faults_for(request.token)
        with self.lock:
            count = self.request_count[request.token] = self.request_count.get(request.token, 0) + 1
        if faults.rate_limit_every and count % faults.rate_limit_every == 0:
            raise ApiError(
                429,
                "too_many_requests",
                "API Rate limit exceeded.",
                {"Retry-After": str(faults.retry_after)},
            )
        _, handler, params = self.match(request.method, request.path)
        if handler is None:
            raise not_found()
        request.params = params
        with self.lock:
            self.sync_wanted = False
            result = handler(request)
            sync = self.sync_wanted
        if sync:  # outside the state lock: background work takes the two locks in this order
            self.sync_firewalls()
        status, document = result if isinstance(result, tuple) else (200, result)
        return status, document, {}

    # ---------------------------------------------------------------------------------------
    # helpers

    @staticmethod
    def page(items: list, key: str, query: dict) -> dict:
        per_page = max(1, min(200, int(query.get("per_page", 20))))
        number = max(1, int(query.get("page", 1)))
        chunk = items[(number - 1) * per_page : number * per_page]
        pages = {}
        last = max(1, -(-len(items) // per_page))
        if number < last:
            pages = {"next": f"?page={number + 1}&per_page={per_page}", "last": f"?page={last}"}
        return {key: chunk, "links": {"pages": pages}, "meta": {"total": len(items)}}

    def body(self, request: Request) -> dict:
        if not isinstance(request.body, dict):
            raise ApiError(400, "bad_request", "The request body is not a JSON object.")
        return request.body

    def check_fresh(self, collection: str, ident: str) -> None:
        """The 404-after-create fault: a new resource is not found for its first few reads."""
        left = self.fresh.get((collection, ident), 0)
        if left > 0:
            self.fresh[(collection, ident)] = left - 1
            raise not_found(f"{collection} {ident} (fault: not yet visible after create)")

    def mark_fresh(self, request: Request, collection: str, ident: str) -> None:
        n = int(self.faults_for(request.token).not_found_after_create.get(collection, 0))
        if n:
            self.fresh[(collection, ident)] = n

    def spawn(self, target: Callable, *args) -> None:
        def guarded():
            try:
                target(*args)
            except Exception:  # noqa: BLE001 - logged; the resource shows the failure
                self.log(
                    f"background work {target.__name__}{args} failed:\n{traceback.format_exc()}"
                )

        thread = threading.Thread(target=guarded, daemon=True, name=f"standin-{target.__name__}")
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()

    def idle(self, timeout: float = 60.0) -> bool:
        """Waits for the background work to end (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        for thread in list(self.threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    # ---------------------------------------------------------------------------------------
    # account, catalog

    def get_account(self, request: Request):
        return {
            "account": {
                "droplet_limit": catalog.DROPLET_LIMIT,
                "floating_ip_limit": 3,
                "volume_limit": 100,
                "email": "operator@standin.invalid",
                "uuid": "00000000-0000-4000-8000-000000000001",
                "email_verified": True,
                "status": "active",
                "status_message": "",
                "team": {"uuid": "00000000-0000-4000-8000-000000000002", "name": "lab"},
            }
        }

    def list_regions(self, request: Request):
        return self.page(
            [catalog.region_json(s) for s in catalog.REGIONS], "regions", request.query
        )

    def list_sizes(self, request: Request):
        return self.page([catalog.size_json(s) for s in catalog.SIZES], "sizes", request.query)

    def get_image(self, request: Request):
        slug = request.params["image"]
        for known, (image_id, _, _) in catalog.IMAGES.items():
            if slug in (known, str(image_id)):
                return {"image": catalog.image_json(known)}
        raise not_found(f"image {slug}")

    # ---------------------------------------------------------------------------------------
    # VPCs

    def vpc_json(self, vpc: dict) -> dict:
        return {k: vpc[k] for k in ("id", "urn", "name", "description", "region", "ip_range")} | {
            "default": False,
            "created_at": vpc["created_at"],
        }

    def find_vpc(self, ident: str) -> dict:
        vpc = self.state["vpcs"].get(ident)
        if not vpc:
            raise not_found(f"vpc {ident}")
        return vpc

    def list_vpcs(self, request: Request):
        vpcs = [self.vpc_json(v) for v in self.state["vpcs"].values()]
        return self.page(vpcs, "vpcs", request.query)

    def create_vpc(self, request: Request):
        body = self.body(request)
        name, region = body.get("name") or "", body.get("region") or ""
        if not VPC_NAME.fullmatch(name):
            raise unprocessable("name must be letters, digits, dashes and periods")
        if any(v["name"] == name for v in self.state["vpcs"].values()):
            raise unprocessable(f"a VPC named {name} already exists in this account")
        if region not in catalog.REGIONS:
            raise unprocessable(f"region {region!r} is not available")
        ip_range = self.pick_vpc_range(body.get("ip_range") or "")
        ident = str(uuid.uuid4())
        vpc = {
            "id": ident,
            "urn": f"do:vpc:{ident}",
            "name": name,
            "description": body.get("description") or "",
            "region": region,
            "ip_range": ip_range,
            "created_at": now_iso(),
            "index": self.next_id("vpc"),
        }
        self.backend.ensure_network(vpc)
        self.state["vpcs"][ident] = vpc
        self.mark_fresh(request, "vpcs", ident)
        self.save()
        return 201, {"vpc": self.vpc_json(vpc)}

    def pick_vpc_range(self, text: str) -> str:
        taken = [ipaddress.ip_network(v["ip_range"]) for v in self.state["vpcs"].values()]
        if not text:
            free = [n for n in self.vpc_pool if not any(n.overlaps(t) for t in taken)]
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
        if not any(network.subnet_of(p) for p in self.vpc_pool):
            pool = ", ".join(str(p) for p in self.vpc_pool)
            raise unprocessable(
                f"ip_range {text}: the stand-in makes only networks it owns ({pool}); "
                "give the stack a vpcCidr among them"
            )
        return str(network)

    def get_vpc(self, request: Request):
        self.check_fresh("vpcs", request.params["id"])
        return {"vpc": self.vpc_json(self.find_vpc(request.params["id"]))}

    def update_vpc(self, request: Request):
        vpc = self.find_vpc(request.params["id"])
        body = self.body(request)
        if "name" in body:
            if not VPC_NAME.fullmatch(body["name"] or ""):
                raise unprocessable("name must be letters, digits, dashes and periods")
            vpc["name"] = body["name"]
        if "description" in body:
            vpc["description"] = body["description"] or ""
        self.save()
        return {"vpc": self.vpc_json(vpc)}

    def vpc_members(self, request: Request):
        vpc = self.find_vpc(request.params["id"])
        members = [
            {"urn": f"do:droplet:{d['id']}", "name": d["name"], "created_at": d["created_at"]}
            for d in self.state["droplets"].values()
            if d["vpc_uuid"] == vpc["id"]
        ]
        return self.page(members, "members", request.query)

    def delete_vpc(self, request: Request):
        vpc = self.find_vpc(request.params["id"])
        if any(d["vpc_uuid"] == vpc["id"] for d in self.state["droplets"].values()):
            raise ApiError(403, "forbidden", "Can not delete VPC with members")
        del self.state["vpcs"][vpc["id"]]
        self.backend.remove_network(vpc)
        self.save()
        return 204, None

    # ---------------------------------------------------------------------------------------
    # tags

    def want_sync(self) -> None:
        """The packet filters must follow (done by `handle` once the state lock is free)."""
        self.sync_wanted = True

    def find_tag(self, name: str) -> dict:
        tag = self.state["tags"].get(name.lower())
        if not tag:
            raise not_found(f"tag {name}")
        return tag

    def ensure_tag(self, name: str) -> str:
        """The tag's stored spelling (made on first use, as the API does)."""
        if not TAG_NAME.fullmatch(name or ""):
            raise unprocessable(f"tag name {name!r}: letters, digits, colons, dashes, underscores")
        tag = self.state["tags"].setdefault(name.lower(), {"name": name})
        return tag["name"]

    def tag_json(self, tag: dict) -> dict:
        droplets = [d for d in self.state["droplets"].values() if self.tagged(d, tag["name"])]
        volumes = [v for v in self.state["volumes"].values() if self.tagged(v, tag["name"])]
        last = f"/v2/droplets/{droplets[-1]['id']}" if droplets else ""
        count = len(droplets) + len(volumes)
        return {
            "name": tag["name"],
            "resources": {
                "count": count,
                "last_tagged_uri": last,
                "droplets": {"count": len(droplets), "last_tagged_uri": last},
                "images": {"count": 0},
                "volumes": {"count": len(volumes)},
                "volume_snapshots": {"count": 0},
                "databases": {"count": 0},
            },
        }

    @staticmethod
    def tagged(resource: dict, name: str) -> bool:
        return name.lower() in {t.lower() for t in resource.get("tags") or []}

    def list_tags(self, request: Request):
        tags = [self.tag_json(t) for t in self.state["tags"].values()]
        return self.page(tags, "tags", request.query)

    def create_tag(self, request: Request):
        name = self.ensure_tag(self.body(request).get("name") or "")
        self.save()
        return 201, {"tag": self.tag_json(self.find_tag(name))}

    def get_tag(self, request: Request):
        self.check_fresh("tags", request.params["name"].lower())
        return {"tag": self.tag_json(self.find_tag(request.params["name"]))}

    def delete_tag(self, request: Request):
        tag = self.find_tag(request.params["name"])
        del self.state["tags"][tag["name"].lower()]
        for resource in [*self.state["droplets"].values(), *self.state["volumes"].values()]:
            resource["tags"] = [
                t for t in resource.get("tags") or [] if t.lower() != tag["name"].lower()
            ]
        for firewall in self.state["firewalls"].values():
            firewall["tags"] = [t for t in firewall["tags"] if t.lower() != tag["name"].lower()]
        self.save()
        self.want_sync()
        return 204, None

    def tag_targets(self, request: Request) -> list[dict]:
        resources = self.body(request).get("resources") or []
        found = []
        for item in resources:
            kind, ident = item.get("resource_type"), str(item.get("resource_id"))
            collection = {"droplet": "droplets", "volume": "volumes"}.get(kind)
            if not collection or ident not in self.state[collection]:
                raise unprocessable(f"resource {kind} {ident} not found")
            found.append(self.state[collection][ident])
        return found

    def tag_resources(self, request: Request):
        tag = self.find_tag(request.params["name"])
        for resource in self.tag_targets(request):
            if not self.tagged(resource, tag["name"]):
                resource.setdefault("tags", []).append(tag["name"])
        self.save()
        self.want_sync()
        return 204, None

    def untag_resources(self, request: Request):
        tag = self.find_tag(request.params["name"])
        for resource in self.tag_targets(request):
            resource["tags"] = [t for t in resource["tags"] if t.lower() != tag["name"].lower()]
        self.save()
        self.want_sync()
        return 204, None

    # ---------------------------------------------------------------------------------------
    # SSH keys

    def find_key(self, ident: str) -> dict:
        for key in self.state["keys"].values():
            if ident in (str(key["id"]), key["fingerprint"]):
                return key
        raise not_found(f"ssh key {ident}")

    def list_keys(self, request: Request):
        return self.page(list(self.state["keys"].values()), "ssh_keys", request.query)

    def create_key(self, request: Request):
        body = self.body(request)
        public_key = " ".join((body.get("public_key") or "").split()[:3])
        fingerprint = key_fingerprint(public_key)
        if any(k["fingerprint"] == fingerprint for k in self.state["keys"].values()):
            raise unprocessable("SSH Key is already in use on your account")
        key = {
            "id": 41000000 + self.next_id("key"),
            "fingerprint": fingerprint,
            "public_key": public_key,
            "name": body.get("name") or "",
        }
        self.state["keys"][str(key["id"])] = key
        self.save()
        return 201, {"ssh_key": key}

    def get_key(self, request: Request):
        return {"ssh_key": self.find_key(request.params["key"])}

    def update_key(self, request: Request):
        key = self.find_key(request.params["key"])
        key["name"] = self.body(request).get("name", key["name"])
        self.save()
        return {"ssh_key": key}

    def delete_key(self, request: Request):
        key = self.find_key(request.params["key"])
        del self.state["keys"][str(key["id"])]
        self.save()
        return 204, None

    # ---------------------------------------------------------------------------------------
    # droplets

    def find_droplet(self, ident: str) -> dict:
        droplet = self.state["droplets"].get(str(ident))
        if not droplet:
            raise not_found(f"droplet {ident}")
        return droplet

    def droplet_json(self, d: dict) -> dict:
        size = catalog.size_json(d["size"])
        features = ["private_networking"]
        features += [f for f in ("monitoring", "ipv6", "backups") if d.get(f)]
        if d.get("droplet_agent", True):
            features.append("droplet_agent")
        v4 = []
        if d["status"] != "new":
            public_net = self.public_network
            private_net = ipaddress.ip_network(self.state["vpcs"][d["vpc_uuid"]]["ip_range"])
            v4 = [
                {
                    "ip_address": d["public"],
                    "netmask": str(public_net.netmask),
                    "gateway": str(public_net[1]),
                    "type": "public",
                },
                {
                    "ip_address": d["private"],
                    "netmask": str(private_net.netmask),
                    "gateway": "<nil>",
                    "type": "private",
                },
            ]
        return {
            "id": d["id"],
            "name": d["name"],
            "memory": size["memory"],
            "vcpus": size["vcpus"],
            "disk": d["disk"],
            "locked": d["locked"],
            "status": d["status"],
            "kernel": None,
            "created_at": d["created_at"],
            "features": features,
            "backup_ids": [],
            "next_backup_window": None,
            "snapshot_ids": [],
            "image": catalog.image_json(d["image"]),
            "volume_ids": list(d["volume_ids"]),
            "size": size,
            "size_slug": d["size"],
            "networks": {"v4": v4, "v6": []},
            "region": catalog.region_json(d["region"]),
            "tags": list(d["tags"]),
            "vpc_uuid": d["vpc_uuid"],
        }

    def list_droplets(self, request: Request):
        droplets = list(self.state["droplets"].values())
        if request.query.get("tag_name"):
            droplets = [d for d in droplets if self.tagged(d, request.query["tag_name"])]
        if request.query.get("name"):
            droplets = [d for d in droplets if d["name"] == request.query["name"]]
        return self.page([self.droplet_json(d) for d in droplets], "droplets", request.query)

    def get_droplet(self, request: Request):
        self.check_fresh("droplets", request.params["id"])
        return {"droplet": self.droplet_json(self.find_droplet(request.params["id"]))}

    def resolve_keys(self, entries: list) -> list[dict]:
        keys = []
        for entry in entries or []:
            try:
                keys.append(self.find_key(str(entry)))
            except ApiError as exc:
                raise unprocessable(f"ssh_keys: no SSH key {entry} in this account") from exc
        return keys

    def create_droplet(self, request: Request):
        body = self.body(request)
        if body.get("names"):
            raise unprocessable("the stand-in creates one droplet per request (no `names`)")
        name = body.get("name") or ""
        if not DROPLET_NAME.fullmatch(name):
            raise unprocessable("name must be a valid hostname (letters, digits, dashes, periods)")
        region, size, image = body.get("region"), body.get("size"), body.get("image")
        if region not in catalog.REGIONS:
            raise unprocessable(f"region {region!r} is not available")
        if size not in catalog.SIZES:
            raise unprocessable(f"size {size!r} is not available (doctl compute size list)")
        image = str(image)
        image = next((s for s, (i, _, _) in catalog.IMAGES.items() if image in (s, str(i))), image)
        if image not in catalog.IMAGES:
            raise unprocessable(f"image {image!r} is not available")
        if image not in catalog.LAB_IMAGES:
            raise unprocessable(
                f"image {image}: the stand-in's droplets run this machine's Debian 12; "
                "use debian-12-x64 (and postgresVersion 15)"
            )
        vpc_id = body.get("vpc_uuid")
        if not vpc_id:
            raise unprocessable("the stand-in makes droplets in a VPC only: give vpc_uuid")
        vpc = self.state["vpcs"].get(vpc_id)
        if not vpc:
            raise unprocessable(f"vpc_uuid {vpc_id} not found")
        if vpc["region"] != region:
            raise unprocessable(f"vpc {vpc_id} is in {vpc['region']}, not in {region}")
        keys = self.resolve_keys(body.get("ssh_keys"))
        tags = [self.ensure_tag(t) for t in body.get("tags") or []]
        if len(self.state["droplets"]) >= catalog.DROPLET_LIMIT:
            raise unprocessable(
                f"creating this/these droplet(s) will exceed your droplet limit "
                f"({catalog.DROPLET_LIMIT})"
            )
        if body.get("volumes"):
            raise unprocessable("the stand-in attaches volumes through volume actions only")
        ident = 470000000 + self.next_id("droplet")
        droplet = {
            "id": ident,
            "host": self.next_id("host"),
            "name": name,
            "region": region,
            "size": size,
            "disk": catalog.SIZES[size][2],
            "image": image,
            "vpc_uuid": vpc_id,
            "ssh_keys": [k["id"] for k in keys],
            "tags": list(dict.fromkeys(tags)),
            "monitoring": bool(body.get("monitoring")),
            "ipv6": bool(body.get("ipv6")),
            "backups": bool(body.get("backups")),
            "droplet_agent": body.get("with_droplet_agent", True) is not False,
            "user_data_sha256": hashlib.sha256((body.get("user_data") or "").encode()).hexdigest(),
            "volume_ids": [],
            "status": "new",
            "locked": False,
            "created_at": now_iso(),
            "public": self.allocate_public(),
            "private": self.allocate_private(vpc),
            "deleting": False,
        }
        self.state["droplets"][str(ident)] = droplet
        action = self.new_action("create", "droplet", ident, region)
        self.mark_fresh(request, "droplets", str(ident))
        self.save()
        self.spawn(self.run_create, str(ident), action["id"], self.faults_for(request.token))
        links = {"actions": [{"id": action["id"], "rel": "create", "href": self.href(action)}]}
        return 202, {"droplet": self.droplet_json(droplet), "links": links}

    def allocate_public(self) -> str:
        """Addresses .10-.199 of the public network, round robin: a freed address is not given
        out again at once (as on DigitalOcean, a new droplet gets a new address)."""
        used = {d["public"] for d in self.state["droplets"].values()}
        for step in range(190):
            n = 10 + (self.state["public_cursor"] + step) % 190
            candidate = str(self.public_network[n])
            if candidate not in used:
                self.state["public_cursor"] = (n - 10 + 1) % 190
                return candidate
        raise unprocessable("the stand-in's public network is full")

    def allocate_private(self, vpc: dict) -> str:
        network = ipaddress.ip_network(vpc["ip_range"])
        span = min(network.num_addresses - 2, 200) - 2  # .2 up; .1 is the operator's
        used = {d["private"] for d in self.state["droplets"].values()}
        cursor = self.state["vpc_cursor"].get(vpc["id"], 0)
        for step in range(span):
            n = 2 + (cursor + step) % span
            candidate = str(network[n])
            if candidate not in used:
                self.state["vpc_cursor"][vpc["id"]] = (n - 2 + 1) % span
                return candidate
        raise unprocessable(f"VPC {vpc['name']} has no free address")

    def public_keys(self, droplet: dict) -> list[str]:
        return [
            self.state["keys"][str(k)]["public_key"]
            for k in droplet["ssh_keys"]
            if str(k) in self.state["keys"]
        ]

    def run_create(self, ident: str, action_id: int, faults: Faults) -> None:
        started = time.monotonic()
        with self.lock:
            droplet = dict(self.state["droplets"][ident])
            vpc = dict(self.state["vpcs"][droplet["vpc_uuid"]])
            keys = self.public_keys(droplet)
        try:
            self.backend.create_host(droplet, vpc, keys)
        except Exception as exc:
            with self.lock:
                self.state["droplets"][ident]["status"] = "archive"
                self.finish_action(action_id, errored=True)
                self.save()
            raise RuntimeError(f"droplet {ident}: its lab host could not be made") from exc
        with self.lock:
            if ident in self.state["droplets"]:
                self.state["droplets"][ident]["host_ready"] = True
        self.sync_firewalls()
        time.sleep(max(0.0, self.timings.boot + faults.slow_actions - (time.monotonic() - started)))
        with self.lock:
            if ident in self.state["droplets"]:
                self.state["droplets"][ident]["status"] = "active"
            self.finish_action(action_id)
            self.save()

    def delete_droplet(self, request: Request):
        droplet = self.find_droplet(request.params["id"])
        self.start_delete(droplet)
        return 204, None

    def delete_droplets_by_tag(self, request: Request):
        tag = request.query.get("tag_name")
        if not tag:
            raise ApiError(400, "bad_request", "tag_name is required")
        for droplet in [d for d in self.state["droplets"].values() if self.tagged(d, tag)]:
            self.start_delete(droplet)
        return 204, None

    def start_delete(self, droplet: dict) -> None:
        if droplet["deleting"]:
            return
        droplet["deleting"] = True
        self.save()
        self.spawn(self.run_delete, str(droplet["id"]))

    def run_delete(self, ident: str) -> None:
        with self.lock:
            droplet = dict(self.state["droplets"][ident])
        self.backend.destroy_host(droplet)
        with self.lock:
            del self.state["droplets"][ident]
            self.applied.pop(ident, None)
            for volume in self.state["volumes"].values():
                volume["droplet_ids"] = [i for i in volume["droplet_ids"] if str(i) != ident]
            for firewall in self.state["firewalls"].values():
                firewall["droplet_ids"] = [i for i in firewall["droplet_ids"] if str(i) != ident]
            self.save()
        self.sync_firewalls()

    # ---------------------------------------------------------------------------------------
    # actions

    def href(self, action: dict) -> str:
        return f"/v2/actions/{action['id']}"

    def new_action(self, kind: str, resource_type: str, resource_id, region: str) -> dict:
        action = {
            "id": 2900000000 + self.next_id("action"),
            "status": "in-progress",
            "type": kind,
            "started_at": now_iso(),
            "completed_at": None,
            "resource_id": resource_id,
            "resource_type": resource_type,
            "region": catalog.region_json(region) if region else None,
            "region_slug": region,
        }
        self.state["actions"][str(action["id"])] = action
        return action

    def finish_action(self, action_id: int, errored: bool = False) -> None:
        action = self.state["actions"][str(action_id)]
        action["status"] = "errored" if errored else "completed"
        action["completed_at"] = now_iso()

    def get_action(self, request: Request):
        action = self.state["actions"].get(request.params["action"])
        if not action:
            raise not_found(f"action {request.params['action']}")
        return {"action": action}

    def get_droplet_action(self, request: Request):
        self.find_droplet(request.params["id"])
        return self.get_action(request)

    def list_droplet_actions(self, request: Request):
        droplet = self.find_droplet(request.params["id"])
        actions = [
            a
            for a in self.state["actions"].values()
            if a["resource_type"] == "droplet" and a["resource_id"] == droplet["id"]
        ]
        return self.page(actions, "actions", request.query)

    def droplet_action(self, request: Request):
        droplet = self.find_droplet(request.params["id"])
        body = self.body(request)
        kind = body.get("type")
        if droplet["locked"] or droplet["status"] == "new" or droplet["deleting"]:
            raise unprocessable("Droplet already has a pending event.")
        status = droplet["status"]
        if kind == "power_off" or kind == "shutdown":
            if status == "off":
                raise unprocessable("Droplet is already powered off.")
        elif kind == "power_on":
            if status == "active":
                raise unprocessable("Droplet is already powered on.")
        elif kind in ("reboot", "power_cycle"):
            pass
        elif kind == "resize":
            size = body.get("size")
            if size not in catalog.SIZES:
                raise unprocessable(f"size {size!r} is not available")
            if status != "off":
                raise unprocessable(
                    "Droplet is currently on. Please power it off to run this event."
                )
            new_disk = catalog.SIZES[size][2]
            if new_disk < droplet["disk"]:
                raise unprocessable(
                    f"This size is not available because it has a smaller disk "
                    f"({new_disk} GB) than the droplet ({droplet['disk']} GB)."
                )
        elif kind == "rename":
            if not DROPLET_NAME.fullmatch(body.get("name") or ""):
                raise unprocessable("name must be a valid hostname")
        elif kind in (
            "enable_backups",
            "disable_backups",
            "enable_private_networking",
            "enable_ipv6",
        ):
            pass
        else:
            raise ApiError(
                422,
                "unprocessable_entity",
                f"action type {kind!r} is not implemented by the stand-in",
            )
        droplet["locked"] = True
        action = self.new_action(kind, "droplet", droplet["id"], droplet["region"])
        self.save()
        self.spawn(
            self.run_droplet_action,
            str(droplet["id"]),
            action["id"],
            dict(body),
            self.faults_for(request.token),
        )
        return 201, {"action": action}

    def run_droplet_action(self, ident: str, action_id: int, body: dict, faults: Faults) -> None:
        kind = body["type"]
        started = time.monotonic()
        with self.lock:
            droplet = dict(self.state["droplets"][ident])
        errored = False
        try:
            if kind == "power_off":
                self.backend.power_off(droplet)
            elif kind == "shutdown":
                self.backend.shutdown(droplet)
            elif kind == "power_on":
                self.backend.power_on(droplet)
            elif kind in ("reboot", "power_cycle"):
                (self.backend.shutdown if kind == "reboot" else self.backend.power_off)(droplet)
                self.backend.power_on(droplet)
        except Exception:
            errored = True
            raise
        finally:
            wait = self.timings.actions.get(kind, self.timings.default_action) + faults.slow_actions
            time.sleep(max(0.0, wait - (time.monotonic() - started)))
            with self.lock:
                current = self.state["droplets"].get(ident)
                if current is not None and not errored:
                    if kind in ("power_off", "shutdown"):
                        current["status"] = "off"
                    elif kind in ("power_on", "reboot", "power_cycle"):
                        current["status"] = "active"
                    elif kind == "resize":
                        current["size"] = body["size"]
                        if body.get("disk", False):
                            current["disk"] = catalog.SIZES[body["size"]][2]
                    elif kind == "rename":
                        current["name"] = body["name"]
                    elif kind == "enable_backups":
                        current["backups"] = True
                    elif kind == "disable_backups":
                        current["backups"] = False
                    elif kind == "enable_ipv6":
                        current["ipv6"] = True
                if current is not None:
                    current["locked"] = False
                self.finish_action(action_id, errored=errored)
                self.save()

    # ---------------------------------------------------------------------------------------
    # firewalls

    def find_firewall(self, ident: str) -> dict:
        firewall = self.state["firewalls"].get(ident)
        if not firewall:
            raise not_found(f"firewall {ident}")
        return firewall

    @staticmethod
    def normalise_addresses(addresses: list) -> list[str]:
        return [str(a).strip().lower() for a in addresses or []]

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
            target = rule.get(side) or {}
            out: dict = {}
            if target.get("addresses"):
                out["addresses"] = self.normalise_addresses(target["addresses"])
            if target.get("tags"):
                out["tags"] = [self.ensure_tag(t) for t in target["tags"]]
            if target.get("droplet_ids"):
                out["droplet_ids"] = [int(i) for i in target["droplet_ids"]]
            for extra in ("load_balancer_uids", "kubernetes_ids"):
                if target.get(extra):
                    out[extra] = list(target[extra])
            if not out:
                raise unprocessable(f"each rule needs at least one of its {side}")
            normalised.append({"protocol": protocol, "ports": ports, side: out})
        return normalised

    def firewall_from_body(self, body: dict, firewall: dict) -> dict:
        name = body.get("name") or ""
        if not FIREWALL_NAME.fullmatch(name):
            raise unprocessable("name must be letters, digits, dashes and periods")
        firewall.update(
            name=name,
            inbound_rules=self.normalise_rules(body.get("inbound_rules"), "sources"),
            outbound_rules=self.normalise_rules(body.get("outbound_rules"), "destinations"),
            droplet_ids=[int(i) for i in body.get("droplet_ids") or []],
            tags=[self.ensure_tag(t) for t in body.get("tags") or []],
        )
        return firewall

    def firewall_json(self, firewall: dict) -> dict:
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

    def list_firewalls(self, request: Request):
        firewalls = [self.firewall_json(f) for f in self.state["firewalls"].values()]
        return self.page(firewalls, "firewalls", request.query)

    def create_firewall(self, request: Request):
        ident = str(uuid.uuid4())
        firewall = self.firewall_from_body(
            self.body(request), {"id": ident, "created_at": now_iso()}
        )
        self.state["firewalls"][ident] = firewall
        self.mark_fresh(request, "firewalls", ident)
        self.save()
        self.want_sync()
        return 202, {"firewall": self.firewall_json(firewall)}

    def get_firewall(self, request: Request):
        self.check_fresh("firewalls", request.params["id"])
        return {"firewall": self.firewall_json(self.find_firewall(request.params["id"]))}

    def update_firewall(self, request: Request):
        firewall = self.find_firewall(request.params["id"])
        self.firewall_from_body(self.body(request), firewall)
        self.save()
        self.want_sync()
        return {"firewall": self.firewall_json(firewall)}

    def delete_firewall(self, request: Request):
        self.find_firewall(request.params["id"])
        del self.state["firewalls"][request.params["id"]]
        self.save()
        self.want_sync()
        return 204, None

    def firewall_add_droplets(self, request: Request):
        firewall = self.find_firewall(request.params["id"])
        for ident in self.body(request).get("droplet_ids") or []:
            if int(ident) not in firewall["droplet_ids"]:
                firewall["droplet_ids"].append(int(ident))
        self.save()
        self.want_sync()
        return 204, None

    def firewall_remove_droplets(self, request: Request):
        firewall = self.find_firewall(request.params["id"])
        gone = {int(i) for i in self.body(request).get("droplet_ids") or []}
        firewall["droplet_ids"] = [i for i in firewall["droplet_ids"] if i not in gone]
        self.save()
        self.want_sync()
        return 204, None

    def firewall_add_tags(self, request: Request):
        firewall = self.find_firewall(request.params["id"])
        for name in self.body(request).get("tags") or []:
            name = self.ensure_tag(name)
            if name not in firewall["tags"]:
                firewall["tags"].append(name)
        self.save()
        self.want_sync()
        return 204, None

    def firewall_remove_tags(self, request: Request):
        firewall = self.find_firewall(request.params["id"])
        gone = {t.lower() for t in self.body(request).get("tags") or []}
        firewall["tags"] = [t for t in firewall["tags"] if t.lower() not in gone]
        self.save()
        self.want_sync()
        return 204, None

    def resolve(self, target: dict) -> list[str]:
        """A rule's sources/destinations as addresses (tags and droplet ids: both addresses of
        every droplet they name)."""
        addresses = list(target.get("addresses") or [])
        ids = {int(i) for i in target.get("droplet_ids") or []}
        tags = {t.lower() for t in target.get("tags") or []}
        for droplet in self.state["droplets"].values():
            if droplet["id"] in ids or tags & {t.lower() for t in droplet["tags"]}:
                addresses += [f"{droplet['public']}/32", f"{droplet['private']}/32"]
        return addresses

    def sync_firewalls(self) -> None:
        """Every lab host's packet filter made to match the firewalls that apply to it now."""
        with self.firewall_lock:
            with self.lock:
                plans = {}
                for ident, droplet in self.state["droplets"].items():
                    if not droplet.get("host_ready") or droplet["deleting"]:
                        continue
                    firewalls = [
                        f for f in self.state["firewalls"].values() if applies_to(f, droplet)
                    ]
                    plans[ident] = (dict(droplet), compile_rules(firewalls, self.resolve))
            for ident, (droplet, script) in plans.items():
                if self.applied.get(ident) != script:
                    self.backend.apply_firewall(droplet, script)
                    self.applied[ident] = script

    # ---------------------------------------------------------------------------------------
    # volumes: block devices of the backend (a loop device each in the lab), seen by the
    # droplet they are attached to at /dev/disk/by-id/scsi-0DO_Volume_<name>

    def find_volume(self, ident: str) -> dict:
        volume = self.state["volumes"].get(ident)
        if not volume:
            raise not_found(f"volume {ident}")
        return volume

    def volume_json(self, volume: dict) -> dict:
        return {
            "id": volume["id"],
            "name": volume["name"],
            "description": volume["description"],
            "size_gigabytes": volume["size_gigabytes"],
            "region": catalog.region_json(volume["region"]),
            "droplet_ids": list(volume["droplet_ids"]),
            "created_at": volume["created_at"],
            "filesystem_type": volume["filesystem_type"],
            "filesystem_label": volume["filesystem_label"],
            "tags": list(volume["tags"]),
        }

    def list_volumes(self, request: Request):
        volumes = list(self.state["volumes"].values())
        if request.query.get("name"):
            volumes = [v for v in volumes if v["name"] == request.query["name"]]
        if request.query.get("region"):
            volumes = [v for v in volumes if v["region"] == request.query["region"]]
        return self.page([self.volume_json(v) for v in volumes], "volumes", request.query)

    def create_volume(self, request: Request):
        body = self.body(request)
        region = body.get("region")
        if region not in catalog.REGIONS:
            raise unprocessable(f"region {region!r} is not available")
        size = int(body.get("size_gigabytes") or 0)
        if not 1 <= size <= 16384:
            raise unprocessable("size_gigabytes must be 1 to 16384")
        name = body.get("name") or ""
        if not re.fullmatch(r"[a-z0-9-]{1,64}", name):
            raise unprocessable("name must be lowercase letters, digits and dashes (64 at most)")
        if any(v["name"] == name and v["region"] == region for v in self.state["volumes"].values()):
            raise ApiError(409, "conflict", f"a volume named {name} already exists in {region}")
        ident = str(uuid.uuid4())
        volume = {
            "id": ident,
            "name": name,
            "description": body.get("description") or "",
            "size_gigabytes": size,
            "region": region,
            "droplet_ids": [],
            "created_at": now_iso(),
            "filesystem_type": body.get("filesystem_type") or "",
            "filesystem_label": body.get("filesystem_label") or "",
            "tags": [self.ensure_tag(t) for t in body.get("tags") or []],
        }
        self.backend.create_volume(dict(volume))
        self.state["volumes"][ident] = volume
        self.save()
        return 201, {"volume": self.volume_json(volume)}

    def get_volume(self, request: Request):
        return {"volume": self.volume_json(self.find_volume(request.params["id"]))}

    def delete_volume(self, request: Request):
        volume = self.find_volume(request.params["id"])
        if volume["droplet_ids"]:
            raise ApiError(409, "conflict", "Volume is currently attached to a droplet")
        self.backend.delete_volume(dict(volume))
        del self.state["volumes"][volume["id"]]
        self.save()
        return 204, None

    def volume_action_by_name(self, request: Request):
        body = self.body(request)
        name, region = body.get("volume_name"), body.get("region")
        match = [
            v for v in self.state["volumes"].values() if (v["name"], v["region"]) == (name, region)
        ]
        if not match:
            raise not_found(f"volume {name} in {region}")
        request.params["id"] = match[0]["id"]
        return self.volume_action(request)

    def volume_action(self, request: Request):
        volume = self.find_volume(request.params["id"])
        body = self.body(request)
        kind = body.get("type")
        droplet = None
        if kind in ("attach", "detach"):
            droplet = self.find_droplet(str(body.get("droplet_id")))
            if droplet["region"] != volume["region"]:
                raise unprocessable("the volume and the droplet are in different regions")
            attached = droplet["id"] in volume["droplet_ids"]
            if kind == "attach":
                if volume["droplet_ids"] and not attached:
                    raise unprocessable("Volume is already attached to another droplet")
                if not attached:
                    volume["droplet_ids"].append(droplet["id"])
                    droplet["volume_ids"].append(volume["id"])
            else:
                if not attached:
                    raise unprocessable("Volume is not attached to this droplet")
                volume["droplet_ids"].remove(droplet["id"])
                droplet["volume_ids"].remove(volume["id"])
        elif kind == "resize":
            size = int(body.get("size_gigabytes") or 0)
            if size <= volume["size_gigabytes"]:
                raise unprocessable("a volume can only grow")
            volume["size_gigabytes"] = size
        else:
            raise unprocessable(f"volume action {kind!r} is not implemented by the stand-in")
        # As DigitalOcean answers: attach_volume / detach_volume / resize, and no resource_id
        # (an action's resource_id is an integer; a volume's id is not).
        label = f"{kind}_volume" if kind in ("attach", "detach") else kind
        action = self.new_action(label, "volume", None, volume["region"])
        self.save()
        self.spawn(
            self.run_volume_action,
            action["id"],
            kind,
            dict(volume),
            dict(droplet) if droplet else None,
            self.faults_for(request.token),
        )
        return 202, {"action": action}

    def run_volume_action(
        self, action_id: int, kind: str, volume: dict, droplet: dict | None, faults: Faults
    ) -> None:
        started = time.monotonic()
        errored = True
        try:
            if kind == "attach":
                self.backend.attach_volume(volume, droplet)
            elif kind == "detach":
                self.backend.detach_volume(volume, droplet)
            else:
                self.backend.resize_volume(volume)
            errored = False
        finally:
            wait = self.timings.actions.get(kind, self.timings.default_action) + faults.slow_actions
            time.sleep(max(0.0, wait - (time.monotonic() - started)))
            with self.lock:
                self.finish_action(action_id, errored=errored)
                self.save()

    def get_volume_action(self, request: Request):
        self.find_volume(request.params["id"])
        return self.get_action(request)

    # ---------------------------------------------------------------------------------------
    # Spaces keys and CDN endpoints (the buckets themselves are S3: lab.standin.spaces)

    def find_spaces_key(self, access_key: str) -> dict:
        key = self.state.setdefault("spaces_keys", {}).get(access_key)
        if not key:
            raise not_found(f"spaces key {access_key}")
        return key

    @staticmethod
    def spaces_key_json(key: dict, secret: bool = False) -> dict:
        shown = {k: key[k] for k in ("name", "access_key", "grants", "created_at")}
        return {**shown, "secret_key": key["secret_key"] if secret else ""}

    def grants(self, body: dict) -> list[dict]:
        grants = []
        for grant in body.get("grants") or []:
            permission = grant.get("permission")
            if permission not in ("read", "readwrite", "fullaccess"):
                raise unprocessable(f"grant permission {permission!r}: read, readwrite, fullaccess")
            grants.append({"bucket": grant.get("bucket") or "", "permission": permission})
        return grants

    def list_spaces_keys(self, request: Request):
        keys = [self.spaces_key_json(k) for k in self.state.setdefault("spaces_keys", {}).values()]
        return self.page(keys, "keys", request.query)

    def create_spaces_key(self, request: Request):
        body = self.body(request)
        if not body.get("name"):
            raise unprocessable("name is required")
        access = "DO" + uuid.uuid4().hex[:18].upper()
        key = {
            "name": body["name"],
            "access_key": access,
            "secret_key": uuid.uuid4().hex + uuid.uuid4().hex[:11],
            "grants": self.grants(body),
            "created_at": now_iso(),
        }
        self.state.setdefault("spaces_keys", {})[access] = key
        self.save()
        return 201, {"key": self.spaces_key_json(key, secret=True)}  # the secret: only now

    def get_spaces_key(self, request: Request):
        return {"key": self.spaces_key_json(self.find_spaces_key(request.params["key"]))}

    def update_spaces_key(self, request: Request):
        key = self.find_spaces_key(request.params["key"])
        body = self.body(request)
        key.update(name=body.get("name") or key["name"], grants=self.grants(body))
        self.save()
        return {"key": self.spaces_key_json(key)}

    def delete_spaces_key(self, request: Request):
        key = self.find_spaces_key(request.params["key"])
        del self.state["spaces_keys"][key["access_key"]]
        self.save()
        return 204, None

    def find_cdn(self, ident: str) -> dict:
        cdn = self.state.setdefault("cdns", {}).get(ident)
        if not cdn:
            raise not_found(f"cdn endpoint {ident}")
        return cdn

    def list_cdns(self, request: Request):
        return self.page(
            list(self.state.setdefault("cdns", {}).values()), "endpoints", request.query
        )

    def create_cdn(self, request: Request):
        body = self.body(request)
        origin = body.get("origin") or ""
        if not re.fullmatch(r"[a-z0-9-]+\.[a-z0-9]+\.digitaloceanspaces\.com", origin):
            raise unprocessable(f"origin {origin!r}: a Spaces bucket's domain")
        if any(c["origin"] == origin for c in self.state.setdefault("cdns", {}).values()):
            raise ApiError(409, "conflict", f"a CDN endpoint for {origin} already exists")
        if body.get("custom_domain") and not body.get("certificate_id"):
            raise unprocessable("a custom domain needs a certificate_id")
        if body.get("certificate_id"):
            raise unprocessable("certificates are not modelled by the stand-in")
        ttl = int(body.get("ttl") or 3600)
        if ttl not in (60, 600, 3600, 86400, 604800):
            raise unprocessable("ttl must be 60, 600, 3600, 86400 or 604800")
        ident = str(uuid.uuid4())
        cdn = {
            "id": ident,
            "origin": origin,
            "endpoint": origin.replace(".digitaloceanspaces.com", ".cdn.digitaloceanspaces.com"),
            "created_at": now_iso(),
            "ttl": ttl,
            "certificate_id": "",
            "custom_domain": "",
        }
        self.state["cdns"][ident] = cdn
        self.save()
        return 201, {"endpoint": cdn}

    def get_cdn(self, request: Request):
        return {"endpoint": self.find_cdn(request.params["id"])}

    def update_cdn(self, request: Request):
        cdn = self.find_cdn(request.params["id"])
        body = self.body(request)
        if "ttl" in body:
            cdn["ttl"] = int(body["ttl"])
        if body.get("certificate_id") or body.get("custom_domain"):
            raise unprocessable("certificates and custom domains are not modelled by the stand-in")
        self.save()
        return {"endpoint": cdn}

    def delete_cdn(self, request: Request):
        cdn = self.find_cdn(request.params["id"])
        del self.state["cdns"][cdn["id"]]
        self.save()
        return 204, None

    # ---------------------------------------------------------------------------------------
    # after a restart of the stand-in

    def recover(self) -> None:
        """Work cut short by a restart is finished; every droplet's lab host is brought to the
        state the API shows."""
        with self.lock:
            for action in self.state["actions"].values():
                if action["status"] == "in-progress":
                    action["status"] = "errored"
                    action["completed_at"] = now_iso()
            droplets = list(self.state["droplets"].values())
            for droplet in droplets:
                droplet["locked"] = False
                if droplet["status"] == "new":
                    droplet["status"] = "active"
            self.save()
        for droplet in droplets:
            if droplet["deleting"]:
                self.spawn(self.run_delete, str(droplet["id"]))
                continue
            vpc = self.state["vpcs"][droplet["vpc_uuid"]]
            self.backend.recover(dict(droplet), dict(vpc), self.public_keys(droplet))
            with self.lock:
                self.state["droplets"][str(droplet["id"])]["host_ready"] = True
        for volume in list(self.state["volumes"].values()):
            attached = [self.state["droplets"][str(i)] for i in volume["droplet_ids"]
                        if str(i) in self.state["droplets"]]  # fmt: skip
            self.backend.recover_volume(dict(volume), [dict(d) for d in attached])
        self.sync_firewalls()
