"""Droplets: lab hosts (lab/standin/resources/machines.py) in a VPC, "new" until their host has
booted, then "active". One droplet per request; only this machine's Debian 12 makes one; the
account's quota holds (25). A deleted droplet answers until its host is gone, then 404 (the
provider polls for that)."""

from __future__ import annotations

import hashlib
import ipaddress
import time

from .base import (
    HOSTNAME,
    ApiError,
    Faults,
    Request,
    Resource,
    at,
    has_tag,
    json_body,
    now_iso,
    page,
    unprocessable,
    wait_out,
)
from .catalog import (
    DROPLET_LIMIT,
    IMAGES,
    LAB_IMAGES,
    REGIONS,
    SIZES,
    image_json,
    image_slug,
    region_json,
    size_json,
)


class Droplets(Resource):
    COLLECTION = "droplets"
    KIND = "droplet"

    def routes(self):
        return [
            *at("/v2/droplets", GET=self.list, POST=self.create, DELETE=self.delete_by_tag),
            *at("/v2/droplets/{id}", GET=self.get, DELETE=self.delete),
        ]

    def networks(self, d: dict) -> list[dict]:
        """Its IPv4 networks as the API shows them (none while it is new)."""
        if d["status"] == "new":
            return []
        public_net = self.account.public_network
        private_net = ipaddress.ip_network(self.account.vpcs.items[d["vpc_uuid"]]["ip_range"])
        return [
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

    def droplet_json(self, d: dict) -> dict:
        size = size_json(d["size"])
        features = ["private_networking"]
        features += [f for f in ("monitoring", "ipv6", "backups") if d.get(f)]
        if d.get("droplet_agent", True):
            features.append("droplet_agent")
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
            "image": image_json(d["image"]),
            "volume_ids": list(d["volume_ids"]),
            "size": size,
            "size_slug": d["size"],
            "networks": {"v4": self.networks(d), "v6": []},
            "region": region_json(d["region"]),
            "tags": list(d["tags"]),
            "vpc_uuid": d["vpc_uuid"],
        }

    def list(self, request: Request):
        droplets = list(self.items.values())
        if request.query.get("tag_name"):
            droplets = [d for d in droplets if has_tag(d, request.query["tag_name"])]
        if request.query.get("name"):
            droplets = [d for d in droplets if d["name"] == request.query["name"]]
        return page([self.droplet_json(d) for d in droplets], "droplets", request.query)

    def get(self, request: Request):
        self.check_fresh(request.params["id"])
        return {"droplet": self.droplet_json(self.find(request.params["id"]))}

    # -- creation -----------------------------------------------------------------------------
    @staticmethod
    def checked_machine(body: dict) -> tuple[str, str, str, str]:
        """(name, region, size, image slug) of a create request, or the API's refusal."""
        if body.get("names"):
            raise unprocessable("the stand-in creates one droplet per request (no `names`)")
        name = body.get("name") or ""
        if not HOSTNAME.fullmatch(name):
            raise unprocessable("name must be a valid hostname (letters, digits, dashes, periods)")
        region, size = body.get("region"), body.get("size")
        if region not in REGIONS:
            raise unprocessable(f"region {region!r} is not available")
        if size not in SIZES:
            raise unprocessable(f"size {size!r} is not available (doctl compute size list)")
        image = image_slug(str(body.get("image")))
        if image not in IMAGES:
            raise unprocessable(f"image {image!r} is not available")
        if image not in LAB_IMAGES:
            raise unprocessable(
                f"image {image}: the stand-in's droplets run this machine's Debian 12 or the "
                "lab's Debian 13; use debian-12-x64 (postgresVersion 15) or debian-13-x64 (17)"
            )
        return name, region, size, image

    def checked_vpc(self, body: dict, region: str) -> dict:
        vpc_id = body.get("vpc_uuid")
        if not vpc_id:
            raise unprocessable("the stand-in makes droplets in a VPC only: give vpc_uuid")
        vpc = self.account.vpcs.items.get(vpc_id)
        if not vpc:
            raise unprocessable(f"vpc_uuid {vpc_id} not found")
        if vpc["region"] != region:
            raise unprocessable(f"vpc {vpc_id} is in {vpc['region']}, not in {region}")
        return vpc

    def create(self, request: Request):
        body = json_body(request)
        name, region, size, image = self.checked_machine(body)
        vpc = self.checked_vpc(body, region)
        keys = self.account.ssh_keys.resolve(body.get("ssh_keys"))
        tags = [self.account.tags.ensure(t) for t in body.get("tags") or []]
        if len(self.items) >= DROPLET_LIMIT:
            raise unprocessable(
                f"creating this/these droplet(s) will exceed your droplet limit ({DROPLET_LIMIT})"
            )
        if body.get("volumes"):
            raise unprocessable("the stand-in attaches volumes through volume actions only")
        ident = 470000000 + self.account.next_id("droplet")
        droplet = {
            "id": ident,
            "name": name,
            "region": region,
            "size": size,
            "disk": SIZES[size][2],
            "image": image,
            "vpc_uuid": vpc["id"],
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
            **self.account.machines.place(vpc),
            "deleting": False,
        }
        self.items[str(ident)] = droplet
        action = self.account.actions.start("create", "droplet", ident, region)
        self.mark_fresh(request, str(ident))
        self.save()
        faults = self.account.faults_for(request.token)
        self.account.spawn(self.run_create, str(ident), action["id"], faults)
        href = self.account.actions.href(action)
        links = {"actions": [{"id": action["id"], "rel": "create", "href": href}]}
        return 202, {"droplet": self.droplet_json(droplet), "links": links}

    def host_inputs(self, ident: str) -> tuple[dict, dict, list[str]]:
        """(the droplet, its VPC, its public keys) as the backend takes them (copies)."""
        droplet = dict(self.items[ident])
        vpc = dict(self.account.vpcs.items[droplet["vpc_uuid"]])
        return droplet, vpc, self.account.ssh_keys.public_keys(droplet["ssh_keys"])

    def run_create(self, ident: str, action_id: int, faults: Faults) -> None:
        started = time.monotonic()
        with self.account.lock:
            droplet, vpc, keys = self.host_inputs(ident)
        try:
            self.account.backend.create_host(droplet, vpc, keys)
        except Exception as exc:
            with self.account.lock:
                self.items[ident]["status"] = "archive"
                self.account.actions.finish(action_id, errored=True)
                self.save()
            raise RuntimeError(f"droplet {ident}: its lab host could not be made") from exc
        with self.account.lock:
            if ident in self.items:
                self.items[ident]["host_ready"] = True
        self.account.firewalls.sync()
        wait_out(started, self.account.timings.boot + faults.slow_actions)
        with self.account.lock:
            if ident in self.items:
                self.items[ident]["status"] = "active"
            self.account.actions.finish(action_id)
            self.save()

    # -- deletion -----------------------------------------------------------------------------
    def delete(self, request: Request):
        self.start_delete(self.find(request.params["id"]))
        return 204, None

    def delete_by_tag(self, request: Request):
        tag = request.query.get("tag_name")
        if not tag:
            raise ApiError(400, "bad_request", "tag_name is required")
        for droplet in self.tagged(tag):
            self.start_delete(droplet)
        return 204, None

    def start_delete(self, droplet: dict) -> None:
        if droplet["deleting"]:
            return
        droplet["deleting"] = True
        self.save()
        self.account.spawn(self.run_delete, str(droplet["id"]))

    def run_delete(self, ident: str) -> None:
        with self.account.lock:
            droplet = dict(self.items[ident])
        self.account.backend.destroy_host(droplet)
        with self.account.lock:
            del self.items[ident]
            for resource in self.account.resources:
                resource.forget_droplet(ident)
            self.save()
        self.account.firewalls.sync()

    # -- hooks --------------------------------------------------------------------------------
    def hosts(self) -> list[dict]:
        return list(self.items.values())

    def vpc_members(self, vpc_id: str) -> list[dict]:
        return [
            {"urn": f"do:droplet:{d['id']}", "name": d["name"], "created_at": d["created_at"]}
            for d in self.items.values()
            if d["vpc_uuid"] == vpc_id
        ]

    def recover(self) -> None:
        """A droplet cut short is active and unlocked; its lab host is brought back as the API
        shows it (or its deletion finished)."""
        with self.account.lock:
            droplets = list(self.items.values())
            for droplet in droplets:
                droplet["locked"] = False
                if droplet["status"] == "new":
                    droplet["status"] = "active"
            self.save()
        for droplet in droplets:
            if droplet["deleting"]:
                self.account.spawn(self.run_delete, str(droplet["id"]))
                continue
            _, vpc, keys = self.host_inputs(str(droplet["id"]))
            self.account.backend.recover(dict(droplet), vpc, keys)
            with self.account.lock:
                self.items[str(droplet["id"])]["host_ready"] = True
