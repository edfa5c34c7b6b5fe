"""Media: the Spaces bucket for Mastodon's files, its CORS origins and the CDN in front of it
(with a custom domain, a certificate made through DigitalOcean DNS or one already there)."""

from __future__ import annotations

import re
from typing import Any

from mastodon_data.config.checks import (
    Field,
    Validation,
    is_dns_name,
    set_command,
    set_path_command,
)
from mastodon_data.config.project import PROJECT
from mastodon_data.config.records import SpacesSettings
from mastodon_data.config.topology import REGIONS

# Spaces is not offered in nyc1 (the other regions of REGIONS have it).
SPACES_REGIONS = tuple(r for r in REGIONS if r != "nyc1")
# Bucket names become DNS labels (<bucket>.<region>.digitaloceanspaces.com): no dots, so the
# wildcard certificate of the endpoint matches.
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
CORS_ORIGIN = re.compile(r"\*|https?://[A-Za-z0-9.-]+(?::\d{1,5})?")
CDN_DOMAIN = "media.example.social"


def subdomain_problem(text: str) -> str | None:
    if not is_dns_name(text) or text.count(".") < 2:
        return f"not a subdomain like {CDN_DOMAIN}"
    return None


FIELDS = (
    Field(
        "spacesBucket",
        example="mastodon-media-example",
        pattern=BUCKET_NAME,
        what="not a DNS-compatible bucket name (3 to 63 of a-z, 0-9 and -, starting and ending "
        "with a letter or digit)",
    ),
    Field(
        "spacesRegion",
        example="nyc3",
        choices=SPACES_REGIONS,
        what="not a Spaces region ({choices})",
    ),
    Field(
        "corsOrigins",
        example="'*'",
        pattern=CORS_ORIGIN,
        what="not * or an origin like https://example.social",
        item_example="https://example.social",
    ),
    Field("cdnCustomDomain", example=CDN_DOMAIN, check=subdomain_problem),
    Field("cdnDnsDomain", example="example.social"),
    Field("cdnCertificateName", example="media-cert"),
)


def parse_spaces(v: Validation, region: str | None) -> SpacesSettings | None:
    """Spaces bucket + CDN; none without spacesBucket (then the CDN keys must be unset too)."""
    values = v.read(FIELDS)
    bucket, origins = values["spacesBucket"], values["corsOrigins"]
    if origins == () and bucket:
        v.bad(
            "corsOrigins",
            [],
            "browsers need a CORS origin to load media from the bucket",
            set_path_command("corsOrigins[0]", "'*'"),
        )
    if values["cdnCustomDomain"] and v.ok("cdnCustomDomain"):
        check_cdn(v, values)
    elif not values["cdnCustomDomain"]:
        for key in ("cdnDnsDomain", "cdnCertificateName"):
            if values[key]:
                v.bad(
                    key,
                    values[key],
                    "only used with cdnCustomDomain",
                    f"{set_command('cdnCustomDomain', CDN_DOMAIN)}, or pulumi config rm "
                    f"{PROJECT}:{key}",
                )
    if not bucket or None in values.values():
        return None
    return SpacesSettings(
        bucket,
        values["spacesRegion"] or region or "nyc3",
        origins,
        values["cdnCustomDomain"],
        values["cdnDnsDomain"],
        values["cdnCertificateName"],
    )


def check_cdn(v: Validation, values: dict[str, Any]) -> None:
    """A custom CDN domain needs a bucket and exactly one certificate source."""
    custom, dns = values["cdnCustomDomain"], values["cdnDnsDomain"]
    certificate = values["cdnCertificateName"]
    if not values["spacesBucket"]:
        v.bad(
            "cdnCustomDomain",
            custom,
            "a CDN domain needs a bucket behind it",
            f"{set_command('spacesBucket', '<bucket name>')}, or pulumi config rm "
            f"{PROJECT}:cdnCustomDomain",
        )
    elif not dns and not certificate:
        v.bad(
            "cdnCustomDomain",
            custom,
            "a custom CDN domain needs a certificate: the domain managed in DigitalOcean "
            "DNS (for a Let's Encrypt certificate) or the name of a certificate already "
            "in the account",
            f"{set_command('cdnDnsDomain', custom.split('.', 1)[1])}  # or: "
            f"{set_command('cdnCertificateName', '<name>')} (doctl compute certificate list)",
        )
    elif dns and certificate:
        v.bad(
            "cdnCertificateName",
            certificate,
            "set together with cdnDnsDomain: use one certificate",
            f"pulumi config rm {PROJECT}:cdnCertificateName (Let's Encrypt through "
            f"cdnDnsDomain), or pulumi config rm {PROJECT}:cdnDnsDomain",
        )
    elif dns and not (is_dns_name(dns) and custom.endswith(f".{dns}")):
        v.bad(
            "cdnDnsDomain",
            dns,
            f"{custom} is not inside it (Let's Encrypt validates through this zone)",
            set_command("cdnDnsDomain", custom.split(".", 1)[1]),
        )
