"""Spaces buckets: their records (the S3 side that answers for them is lab/standin/spaces.py)
and the names Spaces answers on, as the app side resolves them."""

from __future__ import annotations

from .base import Resource

REGIONS = ("ams3", "atl1", "blr1", "fra1", "lon1", "nyc3", "sfo2", "sfo3", "sgp1", "syd1", "tor1")
PUBLIC_DOMAIN = ".digitaloceanspaces.com"  # what Mastodon, the bucket's outputs and the CDN use
CDN_DOMAIN = ".cdn.digitaloceanspaces.com"
PROXY_DOMAIN = ".spaces.test"  # the provider's SPACES_ENDPOINT_URL in the lab (plain HTTP)


def region_host(region: str) -> str:
    return f"{region}{PUBLIC_DOMAIN}"


class Buckets(Resource):
    COLLECTION = "buckets"  # by name
    KIND = "bucket"

    def host_names(self) -> dict[str, str]:
        """Every region's endpoint and each bucket's virtual host, on the Spaces address."""
        address = self.account.backend.spaces_address()
        if not address:
            return {}
        names = {region_host(region): address for region in REGIONS}
        for bucket in self.items.values():
            names[f"{bucket['name']}.{region_host(bucket['region'])}"] = address
        return names

    def recover(self) -> None:
        self.account.publish_names()
