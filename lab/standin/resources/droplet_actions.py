"""Droplet actions: power, resize, rename and the feature switches. A droplet is locked while
one runs ("Droplet already has a pending event"); power actions refuse a droplet already in
that state; a resize needs it off and cannot shrink the disk."""

from __future__ import annotations

import time

from .base import HOSTNAME, Faults, Request, Resource, at, json_body, page, unprocessable, wait_out
from .catalog import SIZES
from .machines import POWER

# What a completed action sets in the droplet's record (resize and rename: see `apply`).
EFFECTS = {
    **dict.fromkeys(("power_off", "shutdown"), {"status": "off"}),
    **dict.fromkeys(("power_on", "reboot", "power_cycle"), {"status": "active"}),
    "enable_backups": {"backups": True},
    "disable_backups": {"backups": False},
    "enable_ipv6": {"ipv6": True},
    **dict.fromkeys(("enable_private_networking", "resize", "rename"), {}),
}


class DropletActions(Resource):
    """Actions are kept by `account.actions`; this resource starts and runs a droplet's."""

    def routes(self):
        return [
            *at("/v2/droplets/{id}/actions", GET=self.list, POST=self.start),
            *at("/v2/droplets/{id}/actions/{action}", GET=self.get),
        ]

    def list(self, request: Request):
        droplet = self.account.droplets.find(request.params["id"])
        actions = self.account.actions.of("droplet", droplet["id"])
        return page(actions, "actions", request.query)

    def get(self, request: Request):
        self.account.droplets.find(request.params["id"])
        return self.account.actions.get(request)

    @staticmethod
    def check(droplet: dict, body: dict) -> None:
        """The API's refusal of action `body` on `droplet`, if any."""
        kind, status = body.get("type"), droplet["status"]
        if droplet["locked"] or status == "new" or droplet["deleting"]:
            raise unprocessable("Droplet already has a pending event.")
        if kind not in EFFECTS:
            raise unprocessable(f"action type {kind!r} is not implemented by the stand-in")
        if kind in ("power_off", "shutdown") and status == "off":
            raise unprocessable("Droplet is already powered off.")
        if kind == "power_on" and status == "active":
            raise unprocessable("Droplet is already powered on.")
        if kind == "rename" and not HOSTNAME.fullmatch(body.get("name") or ""):
            raise unprocessable("name must be a valid hostname")
        if kind == "resize":
            size = body.get("size")
            if size not in SIZES:
                raise unprocessable(f"size {size!r} is not available")
            if status != "off":
                raise unprocessable(
                    "Droplet is currently on. Please power it off to run this event."
                )
            if SIZES[size][2] < droplet["disk"]:
                raise unprocessable(
                    f"This size is not available because it has a smaller disk "
                    f"({SIZES[size][2]} GB) than the droplet ({droplet['disk']} GB)."
                )

    def start(self, request: Request):
        droplet = self.account.droplets.find(request.params["id"])
        body = json_body(request)
        self.check(droplet, body)
        droplet["locked"] = True
        kind, region = body["type"], droplet["region"]
        action = self.account.actions.start(kind, "droplet", droplet["id"], region)
        self.save()
        faults = self.account.faults_for(request.token)
        self.account.spawn(self.run, str(droplet["id"]), action["id"], dict(body), faults)
        return 201, {"action": action}

    def run(self, ident: str, action_id: int, body: dict, faults: Faults) -> None:
        kind = body["type"]
        started = time.monotonic()
        with self.account.lock:
            droplet = dict(self.account.droplets.items[ident])
        errored = False
        try:
            if kind in POWER:
                self.account.machines.power(droplet, kind)
        except Exception:
            errored = True
            raise
        finally:
            wait_out(started, self.account.timings.of(kind) + faults.slow_actions)
            with self.account.lock:
                current = self.account.droplets.items.get(ident)
                if current is not None:
                    if not errored:
                        apply(current, body)
                    current["locked"] = False
                self.account.actions.finish(action_id, errored=errored)
                self.save()


def apply(droplet: dict, body: dict) -> None:
    """What completed action `body` changed, in the droplet's record."""
    kind = body["type"]
    droplet.update(EFFECTS[kind])
    if kind == "resize":
        droplet["size"] = body["size"]
        if body.get("disk", False):
            droplet["disk"] = SIZES[body["size"]][2]
    elif kind == "rename":
        droplet["name"] = body["name"]
