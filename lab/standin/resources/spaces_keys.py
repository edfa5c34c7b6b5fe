"""Spaces access keys: a name, per-bucket grants, and a secret shown only in the answer to its
creation. (The buckets themselves are S3: lab/standin/spaces.py.)"""

from __future__ import annotations

import uuid

from .base import Request, Resource, at, json_body, now_iso, page, unprocessable

PERMISSIONS = ("read", "readwrite", "fullaccess")


def spaces_key_json(key: dict, secret: bool = False) -> dict:
    shown = {k: key[k] for k in ("name", "access_key", "grants", "created_at")}
    return {**shown, "secret_key": key["secret_key"] if secret else ""}


def grants(body: dict) -> list[dict]:
    found = []
    for grant in body.get("grants") or []:
        permission = grant.get("permission")
        if permission not in PERMISSIONS:
            raise unprocessable(f"grant permission {permission!r}: read, readwrite, fullaccess")
        found.append({"bucket": grant.get("bucket") or "", "permission": permission})
    return found


class SpacesKeys(Resource):
    COLLECTION = "spaces_keys"  # by access key
    KIND = "spaces key"

    def routes(self):
        return [
            *at("/v2/spaces/keys", GET=self.list, POST=self.create),
            *at("/v2/spaces/keys/{key}", GET=self.get, PUT=self.update, DELETE=self.delete),
        ]

    def list(self, request: Request):
        keys = [spaces_key_json(k) for k in self.items.values()]
        return page(keys, "keys", request.query)

    def create(self, request: Request):
        body = json_body(request)
        if not body.get("name"):
            raise unprocessable("name is required")
        access = "DO" + uuid.uuid4().hex[:18].upper()
        key = {
            "name": body["name"],
            "access_key": access,
            "secret_key": uuid.uuid4().hex + uuid.uuid4().hex[:11],
            "grants": grants(body),
            "created_at": now_iso(),
        }
        self.items[access] = key
        self.save()
        return 201, {"key": spaces_key_json(key, secret=True)}  # the secret: only now

    def get(self, request: Request):
        return {"key": spaces_key_json(self.find(request.params["key"]))}

    def update(self, request: Request):
        key = self.find(request.params["key"])
        body = json_body(request)
        key.update(name=body.get("name") or key["name"], grants=grants(body))
        self.save()
        return {"key": spaces_key_json(key)}

    def delete(self, request: Request):
        key = self.find(request.params["key"])
        del self.items[key["access_key"]]
        self.save()
        return 204, None
