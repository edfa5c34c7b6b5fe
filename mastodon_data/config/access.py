"""Who may connect to the managed databases (the PostgreSQL cluster, its read-only node and
Valkey): the trusted sources of their DigitalOcean firewalls."""

from __future__ import annotations

import re

from mastodon_data.config.checks import Field, Validation, set_command, set_path_command
from mastodon_data.config.records import AppSources

DO_TAG = re.compile(r"[A-Za-z0-9:_.-]{1,255}")  # DigitalOcean tag names
DROPLET_ID = re.compile(r"\d{1,20}")
MAX_FIREWALL_RULES = 100  # DigitalOcean: a database firewall holds at most 100 trusted sources
CIDR_EXAMPLE = "203.0.113.7/32"
FIELDS = (
    Field(
        "appTag",
        example="mastodon-app",
        pattern=DO_TAG,
        what="not a DigitalOcean tag name (letters, digits, : - _ .)",
    ),
    Field(
        "appDropletIds",
        example="<droplet id>",
        pattern=DROPLET_ID,
        what="not a droplet id (digits)",
        item_example="<id>",
        note="ids: doctl compute droplet list",
    ),
    Field("appCidrs", example=CIDR_EXAMPLE),  # entries: check_app_cidrs
)


def parse_app_sources(v: Validation, needed: bool) -> AppSources:
    """The sources; `needed` when a managed database is made (its firewall needs one)."""
    values = v.read(FIELDS)
    tag, droplet_ids, cidrs = values["appTag"] or "", values["appDropletIds"], values["appCidrs"]
    check_app_cidrs(v, cidrs or ())
    sources = AppSources(tag, tuple(droplet_ids or ()), tuple(cidrs or ()))
    rules = len(sources.firewall_rules())
    if needed and rules == 0 and droplet_ids is not None and cidrs is not None:
        v.bad(
            "appTag",
            tag,
            "the managed databases need at least one app source (appTag, appDropletIds or "
            "appCidrs) for their firewall; without one DigitalOcean lets every address connect",
            f"{set_command('appTag', 'mastodon-app')}  # the tag on the Mastodon droplets",
        )
    elif rules > MAX_FIREWALL_RULES:
        v.add(
            "appCidrs",
            f"<{rules} rules>",
            f"a database firewall holds at most {MAX_FIREWALL_RULES} sources",
            "tag the Mastodon droplets and use appTag instead of listing them",
        )
    return sources


def check_app_cidrs(v: Validation, cidrs: tuple[str, ...]) -> None:
    """IPv4 addresses or ranges, never /0: DigitalOcean's database firewalls take no IPv6."""
    opens = ("the managed databases to every address", "<the address of a Mastodon server>/32")
    for key, text, network in v.cidr_entries(
        "appCidrs", cidrs, CIDR_EXAMPLE, opens, bare_address_ok=True
    ):
        if network.version != 4:
            v.bad(
                key,
                text,
                "IPv6: DigitalOcean database firewalls take IPv4 only",
                set_path_command(key, CIDR_EXAMPLE),
            )
