"""A small client of the stand-in (what `doctl` would be for the lab): the API with a token, and
the stand-in's own control endpoints. Loopback only."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit


class ApiFailed(RuntimeError):
    def __init__(self, status: int, document: dict):
        super().__init__(f"{status}: {document}")
        self.status, self.document = status, document


class Client:
    def __init__(self, url: str, token: str = "dop_v1_standin-operator", timeout: float = 30):
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"the stand-in is on loopback, not at {url}")
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def call(self, method: str, path: str, body=None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read()
                return json.loads(text) if text else {}
        except urllib.error.HTTPError as err:
            text = err.read()
            raise ApiFailed(err.code, json.loads(text) if text else {}) from None

    # the API, as doctl uses it
    def register_key(self, name: str, public_key: str) -> dict:
        """The key in the account (idempotent by fingerprint): {"id", "fingerprint", ...}."""
        wanted = " ".join(public_key.split()[:2])
        for key in self.call("GET", "/v2/account/keys?per_page=200")["ssh_keys"]:
            if " ".join(key["public_key"].split()[:2]) == wanted:
                return key
        return self.call("POST", "/v2/account/keys", {"name": name, "public_key": public_key})[
            "ssh_key"
        ]

    def droplets(self) -> list[dict]:
        return self.call("GET", "/v2/droplets?per_page=200")["droplets"]

    def droplet_named(self, name: str) -> dict:
        found = [d for d in self.droplets() if d["name"] == name]
        if len(found) != 1:
            raise LookupError(f"{len(found)} droplets named {name}")
        return found[0]

    def delete_droplet(self, ident: int, wait: float = 60) -> None:
        """Deletes it (as `doctl compute droplet delete` would) and waits until it is gone."""
        self.call("DELETE", f"/v2/droplets/{ident}")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                self.call("GET", f"/v2/droplets/{ident}")
            except ApiFailed as err:
                if err.status == 404:
                    return
                raise
            time.sleep(0.2)
        raise TimeoutError(f"droplet {ident} still there after {wait} s")

    def ensure_droplet(self, body: dict, wait: float = 60) -> dict:
        """Droplet `body["name"]` (made when missing, as `doctl compute droplet create --wait`),
        once active."""
        found = [d for d in self.droplets() if d["name"] == body["name"]]
        droplet = found[0] if found else self.call("POST", "/v2/droplets", body)["droplet"]
        deadline = time.monotonic() + wait
        while droplet["status"] != "active":
            if time.monotonic() > deadline:
                raise TimeoutError(f"droplet {body['name']} not active after {wait} s")
            time.sleep(0.5)
            droplet = self.call("GET", f"/v2/droplets/{droplet['id']}")["droplet"]
        return droplet

    # the stand-in's control
    def endpoints(self) -> list[str]:
        return self.call("GET", "/_standin/endpoints")["endpoints"]

    def log(self) -> list[dict]:
        return self.call("GET", "/_standin/log")["entries"]

    def state(self) -> dict:
        return self.call("GET", "/_standin/state")

    def set_faults(self, faults: dict) -> dict:
        return self.call("POST", "/_standin/faults", faults)


def coverage(endpoints: list[str], log: list[dict]) -> dict:
    """Which implemented endpoints were called (and how often), which were not, and the
    requests no endpoint answered."""
    called: dict[str, int] = {}
    gaps: dict[str, int] = {}
    for entry in log:
        if entry.get("route"):
            called[entry["route"]] = called.get(entry["route"], 0) + 1
        else:
            key = f"{entry['method']} {entry['path']}"
            gaps[key] = gaps.get(key, 0) + 1
    return {
        "called": dict(sorted(called.items())),
        "not_called": sorted(set(endpoints) - set(called)),
        "unimplemented_requests": dict(sorted(gaps.items())),
    }


def coverage_line(client: Client, request_log, seconds: float) -> str:
    """What a lab's run asked of the stand-in, in one line."""
    seen = coverage(client.endpoints(), client.log())
    return (
        f"stand-in: {sum(seen['called'].values())} API requests, "
        f"{len(seen['called'])} endpoints used, "
        f"{len(seen['unimplemented_requests'])} unimplemented "
        f"({request_log}); {seconds:.0f} s"
    )
