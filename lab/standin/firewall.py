"""Cloud firewalls as packet filtering: the rules of every firewall that applies to a droplet,
compiled into one nftables table in the droplet's network namespace.

DigitalOcean's cloud firewall semantics (docs: "How to Configure Firewall Rules"):
- it drops every packet that no rule allows, inbound and outbound, on the public and the private
  (VPC) interface alike; a droplet with no firewall is open;
- it is stateful: the answers to an allowed connection pass;
- several firewalls on one droplet add up (a packet passes if any rule of any of them allows it);
- a source or destination is addresses/CIDRs, tags (every droplet carrying the tag) or droplet
  ids (those droplets), resolved to the droplets' public and private IPv4 addresses here.
Load balancer and Kubernetes sources have nothing to resolve to in the lab: they match nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

TABLE = "do-cloud-firewall"


def _port_match(protocol: str, ports: str) -> str:
    ports = str(ports or "0").strip().lower()
    if protocol == "icmp" or ports in ("0", "all", ""):
        return ""
    return f" {protocol} dport {ports}"


def _families(addresses: Iterable[str]) -> dict[str, list[str]]:
    """Addresses split by family ("ip"/"ip6"); a /0 of a family becomes "any" (no match)."""
    found: dict[str, list[str]] = {}
    for text in addresses:
        try:
            network = ipaddress.ip_network(str(text).strip(), strict=False)
        except ValueError:
            continue
        family = "ip" if network.version == 4 else "ip6"
        if network.prefixlen == 0:
            found[family] = ["any"]
        elif found.get(family) != ["any"]:
            found.setdefault(family, []).append(str(network))
    return found


def _rules(
    rules: list[dict], side: str, direction: str, resolve: Callable[[dict], list[str]]
) -> list[str]:
    """nft statements of DigitalOcean rules; `side` is "sources" or "destinations"."""
    field = "saddr" if direction == "in" else "daddr"
    lines = []
    for rule in rules:
        protocol = rule.get("protocol", "tcp")
        match_ports = _port_match(protocol, rule.get("ports", "0"))
        for family, addresses in sorted(_families(resolve(rule.get(side) or {})).items()):
            l4 = protocol if protocol != "icmp" else ("icmp" if family == "ip" else "ipv6-icmp")
            where = (
                "" if addresses == ["any"] else f" {family} {field} {{ {', '.join(addresses)} }}"
            )
            lines.append(
                f"meta nfproto {_nfproto(family)} meta l4proto {l4}{where}{match_ports} accept"
            )
    return lines


def _nfproto(family: str) -> str:
    return "ipv4" if family == "ip" else "ipv6"


def compile_rules(firewalls: list[dict], resolve: Callable[[dict], list[str]]) -> str | None:
    """The nft script for a droplet under `firewalls` (None: no firewall, the table goes)."""
    header = f"table inet {TABLE}\ndelete table inet {TABLE}\n"
    if not firewalls:
        return header
    inbound, outbound = [], []
    for firewall in firewalls:
        comment = f"# firewall {firewall['name']} ({firewall['id']})"
        inbound += [comment, *_rules(firewall["inbound_rules"], "sources", "in", resolve)]
        outbound += [comment, *_rules(firewall["outbound_rules"], "destinations", "out", resolve)]
    body = [
        f"table inet {TABLE} {{",
        "  chain inbound {",
        "    type filter hook input priority filter; policy drop;",
        "    ct state established,related accept",
        '    iif "lo" accept',
        *(f"    {line}" for line in inbound),
        "  }",
        "  chain outbound {",
        "    type filter hook output priority filter; policy drop;",
        "    ct state established,related accept",
        '    oif "lo" accept',
        *(f"    {line}" for line in outbound),
        "  }",
        "}",
        "",
    ]
    return header + "\n".join(body)


def applies_to(firewall: dict, droplet: dict) -> bool:
    """A firewall applies to the droplets it names and to those carrying one of its tags."""
    if int(droplet["id"]) in {int(i) for i in firewall.get("droplet_ids") or []}:
        return True
    tags = {t.lower() for t in firewall.get("tags") or []}
    return any(t.lower() in tags for t in droplet.get("tags") or [])


DATABASE_TABLE = "do-database-firewall"


def compile_trusted_sources(addresses: list[str] | None, ports: list[int]) -> str:
    """The nft script for a managed database's node: only `addresses` reach its database
    `ports` (None: no trusted source, open to all, as on DigitalOcean); other ports untouched."""
    header = f"table inet {DATABASE_TABLE}\ndelete table inet {DATABASE_TABLE}\n"
    if addresses is None:
        return header
    allowed = _families(addresses).get("ip", [])
    allow = [] if not allowed else [f"    ip saddr {{ {', '.join(allowed)} }} accept"]
    if allowed == ["any"]:
        allow = ["    meta nfproto ipv4 accept"]
    body = [
        f"table inet {DATABASE_TABLE} {{",
        "  chain inbound {",
        "    type filter hook input priority filter; policy accept;",
        '    iif "lo" accept',
        *allow,
        f"    tcp dport {{ {', '.join(str(p) for p in ports)} }} drop",
        "  }",
        "}",
        "",
    ]
    return header + "\n".join(body)
