"""The lab hosts behind the account's resources, made the same way whatever resource they
serve: a droplet is one, and a managed database's node can be one too. Here a new host gets its
number and its two addresses (on the public network, and in its VPC), and a power action
becomes the backend's sequence; the backend (lab/standin/backend.py, `HostBackend`) plugs,
boots, powers and destroys the host itself.

A resource whose records are hosts: `place(vpc)` gives a new record its `host`, `public` and
`private` keys; `account.backend.create_host(record, vpc, keys)` makes it (in the background:
`account.spawn`); `power(record, "power_off")` pulls its plug; `backend.destroy_host(record)`
removes it; its `hosts()` hook returns its records, so their addresses stay taken, and its
`vpc_members()` hook keeps their VPC from being deleted.
"""

from __future__ import annotations

import ipaddress

from .base import Resource, unprocessable

# A power action as what the machine does, in order (a reboot shuts down gracefully; a power
# cycle pulls the plug).
POWER = {
    "power_off": ("power_off",),
    "shutdown": ("shutdown",),
    "power_on": ("power_on",),
    "reboot": ("shutdown", "power_on"),
    "power_cycle": ("power_off", "power_on"),
}


class Machines(Resource):
    """Its state: where the round robin of addresses stands, on the public network and in each
    VPC (a freed address is not given out again at once: on DigitalOcean, a new droplet gets a
    new address)."""

    def empty_state(self) -> dict:
        return {"public_cursor": 0, "vpc_cursor": {}}

    def in_use(self) -> list[dict]:
        return [host for resource in self.account.resources for host in resource.hosts()]

    def place(self, vpc: dict) -> dict:
        """A new host's number and addresses: the keys `host`, `public`, `private` of its
        record."""
        return {
            "host": self.account.next_id("host"),
            "public": self.allocate_public(),
            "private": self.allocate_private(vpc),
        }

    def allocate_public(self) -> str:
        """Addresses .10-.199 of the public network, round robin."""
        state, network = self.account.state, self.account.public_network
        used = {host["public"] for host in self.in_use()}
        for step in range(190):
            n = 10 + (state["public_cursor"] + step) % 190
            candidate = str(network[n])
            if candidate not in used:
                state["public_cursor"] = (n - 10 + 1) % 190
                return candidate
        raise unprocessable("the stand-in's public network is full")

    def allocate_private(self, vpc: dict) -> str:
        network = ipaddress.ip_network(vpc["ip_range"])
        span = min(network.num_addresses - 2, 200) - 2  # .2 up; .1 is the operator's
        used = {host["private"] for host in self.in_use()}
        cursors = self.account.state["vpc_cursor"]
        cursor = cursors.get(vpc["id"], 0)
        for step in range(span):
            n = 2 + (cursor + step) % span
            candidate = str(network[n])
            if candidate not in used:
                cursors[vpc["id"]] = (n - 2 + 1) % span
                return candidate
        raise unprocessable(f"VPC {vpc['name']} has no free address")

    def power(self, host: dict, action: str) -> None:
        """Power action `action` (a key of POWER) on the host behind `host`."""
        for step in POWER[action]:
            getattr(self.account.backend, step)(host)
