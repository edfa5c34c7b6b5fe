"""What every resource of the stand-in's API shares: the API's error answers, a request, the
switches for time and faults, paging, and `Resource`, the base of each resource module."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.standin.account import Account

NOT_FOUND = "The resource you were accessing could not be found."
# DigitalOcean's rule for droplet, VPC and firewall names: a hostname's letters.
HOSTNAME = re.compile(r"[A-Za-z0-9.-]{1,255}")


class ApiError(Exception):
    def __init__(self, status: int, ident: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.ident, self.message = status, ident, message
        self.headers = headers or {}


def not_found(what: str = "") -> ApiError:
    return ApiError(404, "not_found", NOT_FOUND + (f" ({what})" if what else ""))


def unprocessable(message: str) -> ApiError:
    return ApiError(422, "unprocessable_entity", message)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Request:
    method: str
    path: str
    query: dict
    body: dict | None
    token: str
    params: dict = field(default_factory=dict)


# (method, path template with {name} parameters, handler of a Request)
Route = tuple[str, str, Callable[[Request], object]]


def at(path: str, **handlers: Callable[[Request], object]) -> list[Route]:
    """The routes of one path, by method: at("/v2/vpcs", GET=self.list, POST=self.create)."""
    return [(method, path, handler) for method, handler in handlers.items()]


@dataclass
class Timings:
    """Seconds the stand-in's work takes at least (the provider's own waits come on top:
    it looks again only after 10 s)."""

    boot: float = 2.0  # droplet create -> active (plus the lab host's making)
    actions: dict = field(
        default_factory=lambda: {
            "power_off": 1.0,
            "shutdown": 2.0,
            "power_on": 0.0,  # the boot itself
            "reboot": 0.0,
            "power_cycle": 0.0,
            "resize": 3.0,
            "rename": 0.5,
            "attach": 1.0,
            "detach": 1.0,
        }
    )
    default_action: float = 1.0
    health_check: float = 1.0  # between the control plane's checks of a database's primary

    def of(self, action: str) -> float:
        return self.actions.get(action, self.default_action)


@dataclass
class Faults:
    """Switches for the real API's eventual consistency and limits (per token, or "*")."""

    not_found_after_create: dict = field(default_factory=dict)  # collection -> n GETs
    rate_limit_every: int = 0  # every n-th request answers 429
    retry_after: int = 1  # seconds, in the 429's Retry-After
    slow_actions: float = 0.0  # seconds added to every action and to droplet creation

    @classmethod
    def from_json(cls, document: dict) -> Faults:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(document) - known
        if unknown:
            raise ValueError(f"unknown fault switches: {sorted(unknown)} (known: {sorted(known)})")
        return cls(**document)


def wait_out(started: float, seconds: float) -> None:
    """Sleeps until `seconds` have passed since `started` (time.monotonic())."""
    time.sleep(max(0.0, seconds - (time.monotonic() - started)))


def page(items: list, key: str, query: dict) -> dict:
    """One page of a listing, with the API's links and meta."""
    per_page = max(1, min(200, int(query.get("per_page", 20))))
    number = max(1, int(query.get("page", 1)))
    chunk = items[(number - 1) * per_page : number * per_page]
    pages = {}
    last = max(1, -(-len(items) // per_page))
    if number < last:
        pages = {"next": f"?page={number + 1}&per_page={per_page}", "last": f"?page={last}"}
    return {key: chunk, "links": {"pages": pages}, "meta": {"total": len(items)}}


def json_body(request: Request) -> dict:
    if not isinstance(request.body, dict):
        raise ApiError(400, "bad_request", "The request body is not a JSON object.")
    return request.body


def has_tag(record: dict, name: str) -> bool:
    """Tag names compare case-insensitively."""
    return name.lower() in {t.lower() for t in record.get("tags") or []}


class Resource:
    """One resource of the API in the account: its slice of the account's state (the records of
    COLLECTION, by id) and its routes. The account (`self.account`) holds what they share: the
    state's lock, ids, actions, persistence, background work, the backend, and the other
    resources by name (`account.droplets`, ...).

    The hooks below are what other resources ask of every resource; a resource answers those
    that concern it."""

    COLLECTION = ""  # its key in the account's state
    KIND = ""  # what one of its records is called in a 404

    def __init__(self, account: Account):
        self.account = account
        self.work_locks: dict[str, threading.Lock] = {}

    def empty_state(self) -> dict:
        return {self.COLLECTION: {}} if self.COLLECTION else {}

    @property
    def items(self) -> dict:
        return self.account.state[self.COLLECTION]

    def routes(self) -> list[Route]:
        return []

    def find(self, ident) -> dict:
        record = self.items.get(str(ident))
        if not record:
            raise not_found(f"{self.KIND} {ident}")
        return record

    def check_fresh(self, ident: str) -> None:
        self.account.check_fresh(self.COLLECTION, ident)

    def mark_fresh(self, request: Request, ident: str) -> None:
        self.account.mark_fresh(request, self.COLLECTION, ident)

    def save(self) -> None:
        self.account.save()

    def working(self, ident: str) -> threading.Lock:
        """The lock of a record's work on the machine (its making, its removal): a delete that
        comes meanwhile waits, then removes what was made."""
        with self.account.lock:
            return self.work_locks.setdefault(ident, threading.Lock())

    # -- hooks --------------------------------------------------------------------------------
    def hosts(self) -> list[dict]:
        """Its records that are lab hosts (each has an address on the public network and one
        in its VPC)."""
        return []

    def vpc_members(self, vpc_id: str) -> list[dict]:
        """Its records in VPC `vpc_id`, as GET /v2/vpcs/{id}/members lists them."""
        return []

    def tagged(self, name: str) -> list[dict]:
        return [record for record in self.items.values() if has_tag(record, name)]

    def untag_all(self, name: str) -> None:
        """Tag `name` is deleted: its records carry it no more."""
        for record in self.items.values():
            record["tags"] = [t for t in record.get("tags") or [] if t.lower() != name.lower()]

    def forget_droplet(self, ident: str) -> None:
        """Droplet `ident` is gone: its records name it no more."""

    def host_names(self) -> dict[str, str]:
        """The DNS names its records answer on (name -> address), as the app side resolves them
        (`Account.publish_names`, under the account's lock)."""
        return {}

    def primary_moved(self, cluster: dict) -> None:
        """A standby of managed database `cluster` took over: node 0 is its primary now (what
        streams from it follows; blocking, called outside the account's lock)."""

    def recover(self) -> None:
        """After a restart of the stand-in: work cut short is finished, the machine brought to
        the state the API shows."""

    def watch(self) -> None:
        """One round of the control plane's health checks (`Account.start_watching`)."""
