"""Tags: names compare case-insensitively (the first spelling is kept and returned); a tag is
made on first use, and deleting it takes it off every droplet, volume and firewall."""

from __future__ import annotations

import re

from .base import Request, Resource, at, has_tag, json_body, not_found, page, unprocessable

TAG_NAME = re.compile(r"[A-Za-z0-9:_.-]{1,255}")


class Tags(Resource):
    COLLECTION = "tags"  # by lowercased name
    KIND = "tag"

    def routes(self):
        return [
            *at("/v2/tags", GET=self.list, POST=self.create),
            *at("/v2/tags/{name}", GET=self.get, DELETE=self.delete),
            *at("/v2/tags/{name}/resources", POST=self.tag_resources, DELETE=self.untag_resources),
        ]

    def taggable(self) -> dict[str, Resource]:
        """The resources whose records carry tags, by the API's resource_type."""
        return {"droplet": self.account.droplets, "volume": self.account.volumes}

    def find(self, name: str) -> dict:
        tag = self.items.get(name.lower())
        if not tag:
            raise not_found(f"tag {name}")
        return tag

    def ensure(self, name: str) -> str:
        """The tag's stored spelling (made on first use, as the API does)."""
        if not TAG_NAME.fullmatch(name or ""):
            raise unprocessable(f"tag name {name!r}: letters, digits, colons, dashes, underscores")
        tag = self.items.setdefault(name.lower(), {"name": name})
        return tag["name"]

    def tag_json(self, tag: dict) -> dict:
        droplets = self.account.droplets.tagged(tag["name"])
        volumes = self.account.volumes.tagged(tag["name"])
        last = f"/v2/droplets/{droplets[-1]['id']}" if droplets else ""
        return {
            "name": tag["name"],
            "resources": {
                "count": len(droplets) + len(volumes),
                "last_tagged_uri": last,
                "droplets": {"count": len(droplets), "last_tagged_uri": last},
                "images": {"count": 0},
                "volumes": {"count": len(volumes)},
                "volume_snapshots": {"count": 0},
                "databases": {"count": 0},
            },
        }

    def list(self, request: Request):
        return page([self.tag_json(t) for t in self.items.values()], "tags", request.query)

    def create(self, request: Request):
        name = self.ensure(json_body(request).get("name") or "")
        self.save()
        return 201, {"tag": self.tag_json(self.find(name))}

    def get(self, request: Request):
        self.check_fresh(request.params["name"].lower())
        return {"tag": self.tag_json(self.find(request.params["name"]))}

    def delete(self, request: Request):
        tag = self.find(request.params["name"])
        del self.items[tag["name"].lower()]
        for resource in (*self.taggable().values(), self.account.firewalls):
            resource.untag_all(tag["name"])
        self.save()
        self.account.firewalls.want_sync()
        return 204, None

    def targets(self, request: Request) -> list[dict]:
        found = []
        for item in json_body(request).get("resources") or []:
            kind, ident = item.get("resource_type"), str(item.get("resource_id"))
            resource = self.taggable().get(kind)
            if not resource or ident not in resource.items:
                raise unprocessable(f"resource {kind} {ident} not found")
            found.append(resource.items[ident])
        return found

    def tag_resources(self, request: Request):
        tag = self.find(request.params["name"])
        for record in self.targets(request):
            if not has_tag(record, tag["name"]):
                record.setdefault("tags", []).append(tag["name"])
        self.save()
        self.account.firewalls.want_sync()
        return 204, None

    def untag_resources(self, request: Request):
        tag = self.find(request.params["name"])
        for record in self.targets(request):
            record["tags"] = [t for t in record["tags"] if t.lower() != tag["name"].lower()]
        self.save()
        self.account.firewalls.want_sync()
        return 204, None
