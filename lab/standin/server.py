"""The stand-in's HTTP side: DigitalOcean's API v2 on loopback (plain HTTP; the provider takes
`DIGITALOCEAN_API_URL=http://127.0.0.1:PORT`), threaded, every request logged.

- Requests the stand-in does not implement answer as the API does for an unknown path
  (`404 {"id": "not_found", "message": ...}`) and are logged with `"implemented": false`, so a gap
  is seen rather than guessed at.
- Every answer carries the API's rate-limit headers; a refusal has the API's error shape.
- `/_standin/...` is the lab's own control (never part of DigitalOcean's API): `GET endpoints`
  (implemented routes), `GET log`, `GET state`, `POST faults` ({token or "*": switches}).

The log is JSON lines: time, method, path, the route template that answered (or null), status,
and the fault that answered instead, if any.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from lab.standin.account import Account
from lab.standin.resources.base import ApiError, Faults, Request
from lab.standin.s3_common import S3Error
from lab.standin.spaces import Spaces, is_spaces_host, route

RATE_LIMIT = 5000  # requests per hour, as DigitalOcean's


def answered(document) -> dict:
    """A database cluster's or read-only node's id and status as answered, for the log (what
    the provider's waits saw: lab/bench_managed); nothing for other answers."""
    if isinstance(document, dict):
        for kind in ("database", "replica"):
            if isinstance(document.get(kind), dict):
                record = document[kind]
                fields = ("id", "engine", "status")
                return {"answered": {"kind": kind, **{f: record.get(f) for f in fields}}}
    return {}


def client_label(token: str) -> str:
    """Which token sent a request, in the log without the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:8] if token else ""


class RequestLog:
    def __init__(self, path: Path | None):
        self.path, self.lock, self.entries = path, threading.Lock(), []

    def add(self, entry: dict) -> None:
        with self.lock:
            self.entries.append(entry)
            if self.path:
                with self.path.open("a") as handle:
                    handle.write(json.dumps(entry, sort_keys=True) + "\n")


class StandInServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, account: Account, log: RequestLog, spaces: Spaces | None = None,
                 handler=None, lab_network=None):  # fmt: skip
        ip = None if address[0] == "localhost" else ipaddress.ip_address(address[0])
        if ip and not ip.is_loopback and not (lab_network and ip in lab_network):
            raise ValueError("the stand-in listens on loopback or on its lab's network only")
        super().__init__(address, handler or Handler)
        self.account, self.request_log = account, log
        self.scratch = None  # objects of an account without a state directory (tests)
        if spaces is None:
            if account.state_file:
                root = account.state_file.parent / "spaces"
            else:
                root = self.scratch = Path(tempfile.mkdtemp(prefix="standin-spaces-"))
            spaces = Spaces(account, root)
        self.spaces = spaces

    def server_close(self) -> None:
        super().server_close()
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StandInServer

    def log_message(self, format, *args):  # noqa: A002 - the request log says it all
        pass

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_CONNECT(self):  # a tunnel through the "proxy": never opened, logged as a gap
        self.server.request_log.add(
            {"t": round(time.time(), 3), "method": "CONNECT", "path": self.path, "route": None,
             "implemented": False, "status": 405}
        )  # fmt: skip
        self.send(405, {"id": "method_not_allowed", "message": "the stand-in opens no tunnel"})

    def send(self, status: int, document, headers: dict | None = None) -> None:
        if isinstance(document, bytes):
            payload = document
            headers = {"Content-Type": "application/xml", **(headers or {})}
        else:
            payload = b"" if document is None else json.dumps(document).encode()
        self.send_response(status)
        reset = int(time.time()) + 3600
        base = {
            "Content-Type": "application/json; charset=utf-8",
            "Content-Length": str(len(payload)) if self.command != "HEAD" or payload else "0",
            "ratelimit-limit": str(RATE_LIMIT),
            "ratelimit-remaining": str(RATE_LIMIT - 1),
            "ratelimit-reset": str(reset),
            "x-request-id": str(uuid.uuid4()),
        }
        for key, value in {**base, **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def dispatch(self, method: str) -> None:
        started = time.time()
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        raw = self.read_body()
        entry = {"t": round(started, 3), "method": method, "path": url.path, "query": url.query}
        account = self.server.account
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = None
        if url.path.startswith("/_standin/"):
            status, document = self.control(url.path, body)
            self.send(status, document)
            return
        host = url.netloc or self.headers.get("Host", "")
        if is_spaces_host(host):
            self.s3(method, host, url, raw, entry)
            return
        if url.netloc and url.hostname not in ("127.0.0.1", "localhost"):
            entry.update(route=None, implemented=False, status=404, host=url.netloc)
            self.server.request_log.add(entry)
            self.send(
                404, {"id": "not_found", "message": f"the stand-in forwards nothing ({host})"}
            )
            return
        template, _, _ = account.match(method, url.path)
        entry["route"] = f"{method} {template}" if template else None
        entry["implemented"] = template is not None
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        entry["client"] = client_label(token)
        headers: dict = {}
        if not token:
            status, document = 401, {"id": "Unauthorized", "message": "Unable to authenticate you"}
        else:
            try:
                status, document, headers = account.handle(
                    Request(method, url.path, query, body, token)
                )
            except ApiError as err:
                status, headers = err.status, err.headers
                document = {
                    "id": err.ident,
                    "message": err.message,
                    "request_id": str(uuid.uuid4()),
                }
                if err.status == 429 or "(fault:" in err.message:
                    entry["fault"] = err.ident
            except Exception as exc:  # noqa: BLE001 - answered as the API's 500, and logged
                status = 500
                document = {"id": "server_error", "message": f"stand-in failure: {exc}"}
                account.log(f"{method} {url.path} failed: {exc!r}")
        entry.update(status=status, ms=round((time.time() - started) * 1000, 1))
        entry.update(answered(document))
        if status >= 400:
            entry["error"] = document.get("message") if isinstance(document, dict) else None
        self.server.request_log.add(entry)
        self.send(status, document, headers)

    def read_body(self) -> bytes:
        """The request's body, also when sent with HTTP chunked transfer (SDKs' streams)."""
        if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""
        parts = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers, up to the empty line
            pass
        return b"".join(parts)

    def s3(self, method: str, host: str, url, raw: bytes, entry: dict) -> None:
        """Spaces (S3, virtual-host style, reached through the stand-in as an HTTP proxy)."""
        template = route(method, host, url.path, url.query).template
        entry.update(route=template, implemented=template is not None, host=host)
        try:
            status, body, headers = self.server.spaces.handle(
                method, host, url.path, url.query, self.headers, raw
            )
        except S3Error as err:
            status, body, headers = err.status, err.xml(), {}
            entry["error"] = err.code
        entry["status"] = status
        self.server.request_log.add(entry)
        self.send(status, body, headers)

    def control(self, path: str, body) -> tuple[int, dict]:
        account = self.server.account
        if path == "/_standin/endpoints":
            return 200, {"endpoints": account.endpoints() + self.server.spaces.endpoints()}
        if path == "/_standin/log":
            with self.server.request_log.lock:
                return 200, {"entries": list(self.server.request_log.entries)}
        if path == "/_standin/state":
            with account.lock:
                return 200, json.loads(json.dumps(account.state))
        if path == "/_standin/faults":
            if isinstance(body, dict):
                try:
                    faults = {k: Faults.from_json(v) for k, v in body.items()}
                    with account.lock:  # counted afresh from now on
                        account.faults = faults
                        account.request_count.clear()
                        account.fresh.clear()
                except (TypeError, ValueError) as exc:
                    return 400, {"id": "bad_request", "message": str(exc)}
            return 200, {k: vars(v) for k, v in account.faults.items()}
        if path == "/_standin/idle":
            return 200, {"idle": account.idle(30)}
        return 404, {"id": "not_found", "message": f"no control endpoint {path}"}


class SpacesHandler(Handler):
    """Spaces and the CDN over TLS, as Mastodon and browsers reach them: S3 only."""

    def dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        raw = self.read_body()
        entry = {"t": round(time.time(), 3), "method": method, "path": url.path,
                 "query": url.query, "tls": True}  # fmt: skip
        self.s3(method, self.headers.get("Host", ""), url, raw, entry)


def serve(account: Account, port: int = 0, log_file: Path | None = None) -> StandInServer:
    """Starts the server in a thread; `server.url` is where the provider points."""
    server = StandInServer(("127.0.0.1", port), account, RequestLog(log_file))
    threading.Thread(target=server.serve_forever, daemon=True, name="standin-http").start()
    return server


class SpacesServer(StandInServer):
    """TLS, each connection's handshake in its own thread."""

    def __init__(self, address, api: StandInServer, context: ssl.SSLContext, lab_network):
        super().__init__(address, api.account, api.request_log, api.spaces, SpacesHandler,
                         lab_network)  # fmt: skip
        self.context = context

    def finish_request(self, request, client_address) -> None:
        try:
            request.settimeout(30)
            connection = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a client that does not trust the certificate, or went away
        try:
            super().finish_request(connection, client_address)
        finally:
            connection.close()


def serve_spaces(api: StandInServer, address: str, certificate: Path, lab_network, port=443):
    """Spaces' and the CDN's HTTPS on `address` (in `lab_network`, the lab's own public network),
    with `certificate`'s node.crt and node.key; the API server's account, objects and log."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate / "node.crt", certificate / "node.key")
    server = SpacesServer((address, port), api, context, lab_network)
    threading.Thread(target=server.serve_forever, daemon=True, name="standin-https").start()
    return server
