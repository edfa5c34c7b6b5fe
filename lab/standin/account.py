"""The stand-in's account: the DigitalOcean API v2 resources droplets mode uses, composed.

Pure request handling: `Account.handle(request)` -> (status, document, headers). Each resource
of the API is a module of lab/standin/resources/ with its slice of the state, its routes and
what the real API returns, normalises and refuses there; this account holds what they share:
one state (one lock, ids, persistence in a JSON file), the fault switches, background work, and
the `backend` (lab/standin/backend.py) that makes the resources on the machine, in background
threads as the real API does its work after answering (a droplet is "new", then "active"; an
action is "in-progress", then "completed").

Known behaviour of the real API modelled here (docs/developers/standin.md; the provider): see
each resource's module.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

from lab.standin.backend import Backend
from lab.standin.resources.actions import Actions
from lab.standin.resources.alert_policies import AlertPolicies
from lab.standin.resources.base import ApiError, Faults, Request, Resource, Timings, not_found
from lab.standin.resources.buckets import Buckets
from lab.standin.resources.catalog import Catalog
from lab.standin.resources.cdn import CdnEndpoints
from lab.standin.resources.database_pools import DatabasePools
from lab.standin.resources.database_replicas import DatabaseReplicas
from lab.standin.resources.database_takeover import DatabaseTakeover
from lab.standin.resources.databases import Databases
from lab.standin.resources.droplet_actions import DropletActions
from lab.standin.resources.droplets import Droplets
from lab.standin.resources.firewalls import Firewalls
from lab.standin.resources.load_balancers import LoadBalancers
from lab.standin.resources.machines import Machines
from lab.standin.resources.spaces_keys import SpacesKeys
from lab.standin.resources.ssh_keys import SshKeys
from lab.standin.resources.tags import Tags
from lab.standin.resources.valkey import ValkeyConfigs
from lab.standin.resources.volumes import Volumes
from lab.standin.resources.vpcs import Vpcs


class Account:
    """One DigitalOcean account (team) and its region-wide networks."""

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        public_network: str = "10.241.0.0/24",
        vpc_pool: tuple[str, ...] = ("10.240.0.0/24",),
        state_file: Path | None = None,
        timings: Timings | None = None,
        log: Callable[[str], None] = print,
    ):
        self.backend = backend or Backend()
        self.public_network = ipaddress.ip_network(public_network)
        self.vpc_pool = tuple(ipaddress.ip_network(n) for n in vpc_pool)
        self.state_file = state_file
        self.timings = timings or Timings()
        self.log = log
        self.lock = threading.RLock()
        self.faults: dict[str, Faults] = {}
        self.request_count: dict[str, int] = {}
        self.fresh: dict[tuple[str, str], int] = {}  # (collection, id) -> 404s still to give
        self.threads: list[threading.Thread] = []
        self.sync_wanted = False
        # The resources (each an attribute, for the others to reach), in the order they
        # recover after a restart: actions, droplets, volumes, the firewalls, the databases, their
        # read-only nodes and pools, the load balancers, the alert policies.
        self.catalog, self.actions, self.machines = Catalog(self), Actions(self), Machines(self)
        self.vpcs, self.tags, self.ssh_keys = Vpcs(self), Tags(self), SshKeys(self)
        self.droplets, self.droplet_actions = Droplets(self), DropletActions(self)
        self.volumes, self.firewalls = Volumes(self), Firewalls(self)
        self.spaces_keys, self.cdn_endpoints = SpacesKeys(self), CdnEndpoints(self)
        self.buckets = Buckets(self)
        self.databases, self.database_replicas = Databases(self), DatabaseReplicas(self)
        self.valkey_configs = ValkeyConfigs(self)
        self.database_pools, self.database_takeover = DatabasePools(self), DatabaseTakeover(self)
        self.load_balancers, self.alert_policies = LoadBalancers(self), AlertPolicies(self)
        self.resources = [r for r in vars(self).values() if isinstance(r, Resource)]
        self.state = self.load()
        self.routes = [
            (method, re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "/?$"),
             template, handler)
            for resource in self.resources
            for method, template, handler in resource.routes()
        ]  # fmt: skip

    # -- state: one document, each resource's slice under its own keys ------------------------
    def load(self) -> dict:
        state: dict = {"seq": {}}
        if self.state_file and self.state_file.exists():
            state = json.loads(self.state_file.read_text())
        for resource in self.resources:
            for key, empty in resource.empty_state().items():
                state.setdefault(key, empty)
        return state

    def save(self) -> None:
        if not self.state_file:
            return
        with self.lock:  # one writer at a time: requests and background work both save
            tmp = self.state_file.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            # 0600: it holds the databases' and Spaces keys' secrets
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write(json.dumps(self.state, indent=1, sort_keys=True))
            tmp.replace(self.state_file)

    def next_id(self, kind: str) -> int:
        sequences = self.state["seq"]
        sequences[kind] = sequences.get(kind, 0) + 1
        return sequences[kind]

    # -- faults -------------------------------------------------------------------------------
    def faults_for(self, token: str) -> Faults:
        return self.faults.get(token) or self.faults.get("*") or Faults()

    def check_fresh(self, collection: str, ident: str) -> None:
        """The 404-after-create fault: a new resource is not found for its first few reads."""
        left = self.fresh.get((collection, ident), 0)
        if left > 0:
            self.fresh[(collection, ident)] = left - 1
            raise not_found(f"{collection} {ident} (fault: not yet visible after create)")

    def mark_fresh(self, request: Request, collection: str, ident: str) -> None:
        n = int(self.faults_for(request.token).not_found_after_create.get(collection, 0))
        if n:
            self.fresh[(collection, ident)] = n

    # -- requests -----------------------------------------------------------------------------
    def endpoints(self) -> list[str]:
        return [f"{method} {template}" for method, _, template, _ in self.routes]

    def match(self, method: str, path: str) -> tuple[str | None, Callable | None, dict]:
        for route_method, pattern, template, handler in self.routes:
            found = pattern.match(path)
            if found and route_method == method:
                return template, handler, {k: unquote(v) for k, v in found.groupdict().items()}
        return None, None, {}

    def handle(self, request: Request) -> tuple[int, dict | None, dict]:
        """(status, document, extra headers); ApiError for the API's refusals."""
        faults = self.faults_for(request.token)
        with self.lock:
            count = self.request_count[request.token] = self.request_count.get(request.token, 0) + 1
        if faults.rate_limit_every and count % faults.rate_limit_every == 0:
            raise ApiError(
                429,
                "too_many_requests",
                "API Rate limit exceeded.",
                {"Retry-After": str(faults.retry_after)},
            )
        _, handler, params = self.match(request.method, request.path)
        if handler is None:
            raise not_found()
        request.params = params
        with self.lock:
            self.sync_wanted = False
            result = handler(request)
            sync = self.sync_wanted
        if sync:  # outside the state lock: background work takes the two locks in this order
            self.firewalls.sync()
        status, document = result if isinstance(result, tuple) else (200, result)
        return status, document, {}

    def publish_names(self) -> None:
        """Every resource's DNS names, written for the app side (lab/standin/lab_pki.py)."""
        names: dict[str, str] = {}
        with self.lock:
            for resource in self.resources:
                names.update(resource.host_names())
        self.backend.publish_names(names)

    # -- background work ----------------------------------------------------------------------
    def spawn(self, target: Callable, *args) -> None:
        def guarded():
            try:
                target(*args)
            except Exception:  # noqa: BLE001 - logged; the resource shows the failure
                self.log(
                    f"background work {target.__name__}{args} failed:\n{traceback.format_exc()}"
                )

        thread = threading.Thread(target=guarded, daemon=True, name=f"standin-{target.__name__}")
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()

    def start_watching(self, interval: float) -> threading.Event:
        """The control plane's health checks: every resource's `watch` hook, every `interval`
        seconds, in a thread of its own until the returned event is set."""
        stop = threading.Event()

        def rounds():
            while not stop.wait(interval):
                for resource in self.resources:
                    try:
                        resource.watch()
                    except Exception:  # noqa: BLE001 - logged; the next round tries again
                        self.log(f"watch of {type(resource).__name__} failed:\n"
                                 f"{traceback.format_exc()}")  # fmt: skip

        threading.Thread(target=rounds, daemon=True, name="standin-watch").start()
        return stop

    def idle(self, timeout: float = 60.0) -> bool:
        """Waits for the background work to end (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        for thread in list(self.threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def recover(self) -> None:
        """After a restart of the stand-in: work cut short is finished; every resource is
        brought on the machine to the state the API shows."""
        for resource in self.resources:
            resource.recover()
