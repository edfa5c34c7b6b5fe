"""The stand-in's networks on this machine. A switch namespace `<prefix>-sw` holds a bridge for
the public network (`pub`) and one per VPC (`vpc<n>`). The operator (this machine's root
namespace) sits on both kinds: the first address of the public network (what `adminCidrs`
names) and the first address of each VPC (standing in for a Mastodon app server in the VPC, so
the stack's private endpoints and the replication check work from here). Nothing the lab's
hosts send leaves the lab: every range it owns has a blackhole route behind its own.
"""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path

from lab.system import link_exists, netns_list, run

BLACKHOLE_METRIC = "4242"  # behind a link's own route (metric 0), which wins while it exists


class LabNetwork:
    """The backend's networks (lab/standin/backend.py, `NetworkBackend`)."""

    def __init__(self, prefix: str, public_network: str, state_dir: Path, vpc_pool=(), log=print):
        self.prefix, self.state_dir, self.log = prefix, Path(state_dir), log
        self.public = ipaddress.ip_network(public_network)
        self.vpc_pool = tuple(ipaddress.ip_network(n) for n in vpc_pool)
        self.switch = f"{prefix}-sw"
        self.network_lock = threading.RLock()

    @property
    def operator_address(self) -> str:
        return str(self.public[1])

    def ensure_switch(self) -> None:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.switch not in netns_list():
            run(["ip", "netns", "add", self.switch])
        sw = ["ip", "-n", self.switch]
        self.no_ipv6(self.switch)
        run(sw + ["link", "set", "lo", "up"])
        self._operator_port("pub", f"{self.prefix}0", f"{self.prefix}-op", self.public)
        present = self.blackholes()
        for network in self.owned():
            if network not in present:
                run(["ip", "route", "add", "blackhole", str(network), "metric", BLACKHOLE_METRIC])

    def owned(self) -> list:
        """The ranges this lab owns. Each has a blackhole route behind its link's own route, so
        a packet for one of them never leaves this machine, also when its network is gone (a
        VPC deleted) or not made yet."""
        return [self.public, *self.vpc_pool]

    @staticmethod
    def no_ipv6(ns: str) -> None:
        """No IPv6 in the lab's namespaces (the stand-in's droplets have none)."""
        run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
             "net.ipv6.conf.default.disable_ipv6=1"])  # fmt: skip

    def _operator_port(self, bridge: str, root_link: str, sw_link: str, network) -> None:
        sw = ["ip", "-n", self.switch]
        if not link_exists(bridge, self.switch):
            run(sw + ["link", "add", bridge, "type", "bridge"])
        run(sw + ["link", "set", bridge, "up"])
        if not link_exists(root_link):
            if link_exists(sw_link, self.switch):
                run(sw + ["link", "del", sw_link])
            run(["ip", "link", "add", root_link, "type", "veth", "peer", "name", sw_link,
                 "netns", self.switch])  # fmt: skip
        run(sw + ["link", "set", sw_link, "master", bridge, "up"])
        address = f"{network[1]}/{network.prefixlen}"
        if address not in run(["ip", "-o", "addr", "show", "dev", root_link]).stdout:
            run(["ip", "addr", "add", address, "dev", root_link])
        run(["ip", "link", "set", root_link, "up"])

    def ensure_network(self, vpc: dict) -> None:
        with self.network_lock:  # droplets are made in parallel; each makes sure of its network
            self._ensure_network(vpc)

    def _ensure_network(self, vpc: dict) -> None:
        self.ensure_switch()
        n = vpc["index"]
        network = ipaddress.ip_network(vpc["ip_range"])
        self._operator_port(f"vpc{n}", f"{self.prefix}v{n}", f"{self.prefix}-ov{n}", network)

    def remove_network(self, vpc: dict) -> None:
        n = vpc["index"]
        if link_exists(f"{self.prefix}v{n}"):
            run(["ip", "link", "del", f"{self.prefix}v{n}"])
        if link_exists(f"vpc{n}", self.switch):
            run(["ip", "-n", self.switch, "link", "del", f"vpc{n}"])

    # -- hosts that are not the account's (tests: someone outside the allowed sources) --------
    def add_probe(self, index: int, bridge: str, address: str, prefixlen: int) -> str:
        """A bare namespace `<prefix>-x<index>` at `address` on `bridge` ("pub" or "vpc<n>")."""
        ns, port = f"{self.prefix}-x{index}", f"{self.prefix}-x{index}"
        if ns not in netns_list():
            run(["ip", "netns", "add", ns])
        run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
        if not link_exists(port, self.switch):
            run(["ip", "link", "add", port, "netns", self.switch, "type", "veth", "peer", "name",
                 "eth0", "netns", ns])  # fmt: skip
        run(["ip", "-n", self.switch, "link", "set", port, "master", bridge, "up"])
        if f" {address}/" not in run(["ip", "-n", ns, "-o", "addr", "show", "dev", "eth0"]).stdout:
            run(["ip", "-n", ns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    # -- teardown -----------------------------------------------------------------------------
    def operator_links(self) -> list[str]:
        """The operator's links of this lab in the root namespace (public network, VPCs)."""
        found = []
        for line in run(["ip", "-o", "link", "show"]).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name == f"{self.prefix}0" or (
                name.startswith(f"{self.prefix}v") and name[len(self.prefix) + 1 :].isdigit()
            ):
                found.append(name)
        return found

    def blackholes(self) -> list:
        """The owned ranges whose blackhole route is in place."""
        return [
            network
            for network in self.owned()
            if run(["ip", "route", "show", "type", "blackhole", str(network)]).stdout.strip()
        ]
