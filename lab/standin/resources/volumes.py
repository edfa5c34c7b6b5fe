"""Volumes and their actions (attach, detach, resize): block devices of the backend (a loop
device each in the lab), seen by the droplet they are attached to at
/dev/disk/by-id/scsi-0DO_Volume_<name>. A volume only grows; an attached one cannot be deleted."""

from __future__ import annotations

import re
import time
import uuid

from .base import (
    ApiError,
    Faults,
    Request,
    Resource,
    at,
    json_body,
    not_found,
    now_iso,
    page,
    unprocessable,
    wait_out,
)
from .catalog import REGIONS, region_json


class Volumes(Resource):
    COLLECTION = "volumes"
    KIND = "volume"

    def routes(self):
        return [
            *at("/v2/volumes", GET=self.list, POST=self.create),
            *at("/v2/volumes/{id}", GET=self.get, DELETE=self.delete),
            *at("/v2/volumes/{id}/actions", POST=self.start_action),
            *at("/v2/volumes/actions", POST=self.start_action_by_name),
            *at("/v2/volumes/{id}/actions/{action}", GET=self.get_action),
        ]

    @staticmethod
    def volume_json(volume: dict) -> dict:
        return {
            "id": volume["id"],
            "name": volume["name"],
            "description": volume["description"],
            "size_gigabytes": volume["size_gigabytes"],
            "region": region_json(volume["region"]),
            "droplet_ids": list(volume["droplet_ids"]),
            "created_at": volume["created_at"],
            "filesystem_type": volume["filesystem_type"],
            "filesystem_label": volume["filesystem_label"],
            "tags": list(volume["tags"]),
        }

    def list(self, request: Request):
        volumes = list(self.items.values())
        if request.query.get("name"):
            volumes = [v for v in volumes if v["name"] == request.query["name"]]
        if request.query.get("region"):
            volumes = [v for v in volumes if v["region"] == request.query["region"]]
        return page([self.volume_json(v) for v in volumes], "volumes", request.query)

    def create(self, request: Request):
        body = json_body(request)
        region = body.get("region")
        if region not in REGIONS:
            raise unprocessable(f"region {region!r} is not available")
        size = int(body.get("size_gigabytes") or 0)
        if not 1 <= size <= 16384:
            raise unprocessable("size_gigabytes must be 1 to 16384")
        name = body.get("name") or ""
        if not re.fullmatch(r"[a-z0-9-]{1,64}", name):
            raise unprocessable("name must be lowercase letters, digits and dashes (64 at most)")
        if any(v["name"] == name and v["region"] == region for v in self.items.values()):
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
            "tags": [self.account.tags.ensure(t) for t in body.get("tags") or []],
        }
        self.account.backend.create_volume(dict(volume))
        self.items[ident] = volume
        self.save()
        return 201, {"volume": self.volume_json(volume)}

    def get(self, request: Request):
        return {"volume": self.volume_json(self.find(request.params["id"]))}

    def delete(self, request: Request):
        volume = self.find(request.params["id"])
        if volume["droplet_ids"]:
            raise ApiError(409, "conflict", "Volume is currently attached to a droplet")
        self.account.backend.delete_volume(dict(volume))
        del self.items[volume["id"]]
        self.save()
        return 204, None

    # -- actions ------------------------------------------------------------------------------
    def start_action_by_name(self, request: Request):
        body = json_body(request)
        name, region = body.get("volume_name"), body.get("region")
        match = [v for v in self.items.values() if (v["name"], v["region"]) == (name, region)]
        if not match:
            raise not_found(f"volume {name} in {region}")
        request.params["id"] = match[0]["id"]
        return self.start_action(request)

    def attachment(self, volume: dict, body: dict) -> dict:
        """Attach or detach (body["type"]) in the records; the droplet."""
        droplet = self.account.droplets.find(str(body.get("droplet_id")))
        if droplet["region"] != volume["region"]:
            raise unprocessable("the volume and the droplet are in different regions")
        attached = droplet["id"] in volume["droplet_ids"]
        if body["type"] == "attach":
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
        return droplet

    def start_action(self, request: Request):
        volume = self.find(request.params["id"])
        body = json_body(request)
        kind = body.get("type")
        droplet = None
        if kind in ("attach", "detach"):
            droplet = self.attachment(volume, body)
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
        action = self.account.actions.start(label, "volume", None, volume["region"])
        self.save()
        self.account.spawn(
            self.run_action,
            action["id"],
            kind,
            dict(volume),
            dict(droplet) if droplet else None,
            self.account.faults_for(request.token),
        )
        return 202, {"action": action}

    def run_action(
        self, action_id: int, kind: str, volume: dict, droplet: dict | None, faults: Faults
    ) -> None:
        started = time.monotonic()
        backend = self.account.backend
        errored = True
        try:
            if kind == "attach":
                backend.attach_volume(volume, droplet)
            elif kind == "detach":
                backend.detach_volume(volume, droplet)
            else:
                backend.resize_volume(volume)
            errored = False
        finally:
            wait_out(started, self.account.timings.of(kind) + faults.slow_actions)
            with self.account.lock:
                self.account.actions.finish(action_id, errored=errored)
                self.save()

    def get_action(self, request: Request):
        self.find(request.params["id"])
        return self.account.actions.get(request)

    # -- hooks --------------------------------------------------------------------------------
    def forget_droplet(self, ident: str) -> None:
        for volume in self.items.values():
            volume["droplet_ids"] = [i for i in volume["droplet_ids"] if str(i) != ident]

    def recover(self) -> None:
        """Each volume's device, and its link on the droplet it is attached to."""
        droplets = self.account.droplets.items
        for volume in list(self.items.values()):
            attached = [droplets[str(i)] for i in volume["droplet_ids"] if str(i) in droplets]
            self.account.backend.recover_volume(dict(volume), [dict(d) for d in attached])
