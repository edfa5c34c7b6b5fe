"""SSH keys of the account: named by id or by fingerprint (MD5, as DigitalOcean shows it); a
droplet's keys are authorised on its lab host."""

from __future__ import annotations

import base64
import hashlib

from .base import ApiError, Request, Resource, at, json_body, not_found, page, unprocessable


def key_fingerprint(public_key: str) -> str:
    """MD5 fingerprint of an OpenSSH public key, as DigitalOcean shows it (aa:bb:...)."""
    parts = public_key.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")):
        raise unprocessable("Key invalid type, we support 'ssh-rsa', 'ssh-ed25519', 'ecdsa-...'")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError as exc:
        raise unprocessable("Key invalid, the key is not base64") from exc
    digest = hashlib.md5(blob).hexdigest()  # noqa: S324 - the fingerprint DigitalOcean uses
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


class SshKeys(Resource):
    COLLECTION = "keys"
    KIND = "ssh key"

    def routes(self):
        return [
            *at("/v2/account/keys", GET=self.list, POST=self.create),
            *at("/v2/account/keys/{key}", GET=self.get, PUT=self.update, DELETE=self.delete),
        ]

    def find(self, ident: str) -> dict:
        for key in self.items.values():
            if ident in (str(key["id"]), key["fingerprint"]):
                return key
        raise not_found(f"ssh key {ident}")

    def resolve(self, entries: list) -> list[dict]:
        """The keys a request names (ids or fingerprints)."""
        keys = []
        for entry in entries or []:
            try:
                keys.append(self.find(str(entry)))
            except ApiError as exc:
                raise unprocessable(f"ssh_keys: no SSH key {entry} in this account") from exc
        return keys

    def public_keys(self, ids: list) -> list[str]:
        """The public keys of those of `ids` still in the account."""
        return [self.items[str(k)]["public_key"] for k in ids if str(k) in self.items]

    def list(self, request: Request):
        return page(list(self.items.values()), "ssh_keys", request.query)

    def create(self, request: Request):
        body = json_body(request)
        public_key = " ".join((body.get("public_key") or "").split()[:3])
        fingerprint = key_fingerprint(public_key)
        if any(k["fingerprint"] == fingerprint for k in self.items.values()):
            raise unprocessable("SSH Key is already in use on your account")
        key = {
            "id": 41000000 + self.account.next_id("key"),
            "fingerprint": fingerprint,
            "public_key": public_key,
            "name": body.get("name") or "",
        }
        self.items[str(key["id"])] = key
        self.save()
        return 201, {"ssh_key": key}

    def get(self, request: Request):
        return {"ssh_key": self.find(request.params["key"])}

    def update(self, request: Request):
        key = self.find(request.params["key"])
        key["name"] = json_body(request).get("name", key["name"])
        self.save()
        return {"ssh_key": key}

    def delete(self, request: Request):
        key = self.find(request.params["key"])
        del self.items[str(key["id"])]
        self.save()
        return 204, None
