"""CDN endpoints in front of a Spaces bucket (certificates and custom domains are not
modelled: the stand-in refuses them). The endpoint's name resolves on the app side to the
Spaces address, where lab/standin/spaces.py serves it."""

from __future__ import annotations

import re
import uuid

from .base import ApiError, Request, Resource, at, json_body, now_iso, page, unprocessable

TTLS = (60, 600, 3600, 86400, 604800)


class CdnEndpoints(Resource):
    COLLECTION = "cdns"
    KIND = "cdn endpoint"

    def routes(self):
        return [
            *at("/v2/cdn/endpoints", GET=self.list, POST=self.create),
            *at("/v2/cdn/endpoints/{id}", GET=self.get, PUT=self.update, DELETE=self.delete),
        ]

    def list(self, request: Request):
        return page(list(self.items.values()), "endpoints", request.query)

    def create(self, request: Request):
        body = json_body(request)
        origin = body.get("origin") or ""
        if not re.fullmatch(r"[a-z0-9-]+\.[a-z0-9]+\.digitaloceanspaces\.com", origin):
            raise unprocessable(f"origin {origin!r}: a Spaces bucket's domain")
        if any(c["origin"] == origin for c in self.items.values()):
            raise ApiError(409, "conflict", f"a CDN endpoint for {origin} already exists")
        if body.get("custom_domain") and not body.get("certificate_id"):
            raise unprocessable("a custom domain needs a certificate_id")
        if body.get("certificate_id"):
            raise unprocessable("certificates are not modelled by the stand-in")
        ttl = int(body.get("ttl") or 3600)
        if ttl not in TTLS:
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
        self.items[ident] = cdn
        self.save()
        self.account.publish_names()
        return 201, {"endpoint": cdn}

    def get(self, request: Request):
        return {"endpoint": self.find(request.params["id"])}

    def update(self, request: Request):
        cdn = self.find(request.params["id"])
        body = json_body(request)
        if "ttl" in body:
            cdn["ttl"] = int(body["ttl"])
        if body.get("certificate_id") or body.get("custom_domain"):
            raise unprocessable("certificates and custom domains are not modelled by the stand-in")
        self.save()
        return {"endpoint": cdn}

    def delete(self, request: Request):
        cdn = self.find(request.params["id"])
        del self.items[cdn["id"]]
        self.save()
        self.account.publish_names()
        return 204, None

    def host_names(self) -> dict[str, str]:
        address = self.account.backend.spaces_address()
        return {cdn["endpoint"]: address for cdn in self.items.values()} if address else {}
