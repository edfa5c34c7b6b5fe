"""The few calls of DigitalOcean's API the package makes itself (the rest is the provider's):
JSON over HTTPS with the account's token, a 429 waited out as `Retry-After` says. The token and
the API's address come from the environment as the provider takes them."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

DEFAULT_URL = "https://api.digitalocean.com"
TOKEN_VARIABLES = ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN")
RATE_LIMIT_RETRIES = 5


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, message: str):
        super().__init__(f"{method} {path}: {status} {message}")
        self.status = status


class MissingToken(Exception):
    pass


class DigitalOcean:
    def __init__(self, token: str, url: str = DEFAULT_URL, timeout: float = 30):
        self.url, self.timeout = url.rstrip("/"), timeout
        self._token = token

    @classmethod
    def from_environment(cls) -> DigitalOcean:
        token = next((os.environ[v] for v in TOKEN_VARIABLES if os.environ.get(v)), None)
        if not token:
            raise MissingToken(f"no API token: set {TOKEN_VARIABLES[0]} (as for the provider)")
        return cls(token, os.environ.get("DIGITALOCEAN_API_URL") or DEFAULT_URL)

    def call(self, method: str, path: str, body: dict | None = None) -> dict | None:
        """The decoded answer (None when empty); an ApiError for any status over 299."""
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            request = urllib.request.Request(self.url + path, data=data, method=method)
            request.add_header("Authorization", f"Bearer {self._token}")
            request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    text = response.read()
                    return json.loads(text) if text else None
            except urllib.error.HTTPError as err:
                if err.code == 429 and attempt < RATE_LIMIT_RETRIES:
                    time.sleep(min(float(err.headers.get("Retry-After") or 1), 60))
                    continue
                raise ApiError(err.code, method, path, error_message(err)) from None
        raise AssertionError("unreachable")


def error_message(err: urllib.error.HTTPError) -> str:
    try:
        return json.loads(err.read() or b"{}").get("message") or err.reason
    except ValueError:
        return str(err.reason)
