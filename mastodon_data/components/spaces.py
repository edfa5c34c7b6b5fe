"""Object storage for Mastodon's media (any mode): a Spaces bucket whose listing is private
(objects are uploaded public-read by Mastodon, S3_PERMISSION), CORS for browsers, a CDN in front
(optionally on an own subdomain with a certificate), and a Spaces key for this bucket only."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

from mastodon_data.components.lifecycle import keep_data
from mastodon_data.config import SpacesSettings
from mastodon_data.naming import do_name

# Browsers load media (images, video, audio) cross-origin; they never write.
CORS_METHODS = ["GET", "HEAD"]
CORS_MAX_AGE = 3000


class SpacesMedia(pulumi.ComponentResource):
    """`storage`: an Output of a plain dict for env.ObjectStorage (secret key included);
    `output`: the stack output `media` (no secret in it)."""

    def __init__(
        self,
        name: str,
        spaces: SpacesSettings,
        protect: bool = True,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mastodon-data:index:SpacesMedia", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        base = do_name("mastodon-data", pulumi.get_stack())
        # "private" is the bucket ACL: nobody lists the bucket; objects carry their own ACL.
        self.bucket = do.SpacesBucket(
            f"{name}-bucket",
            name=spaces.bucket,
            region=spaces.region,
            acl="private",
            opts=keep_data(protect, child),  # Mastodon's media
        )
        self.cors = do.SpacesBucketCorsConfiguration(
            f"{name}-cors",
            bucket=self.bucket.name,
            region=spaces.region,
            cors_rules=[
                do.SpacesBucketCorsConfigurationCorsRuleArgs(
                    allowed_methods=CORS_METHODS,
                    allowed_origins=list(spaces.cors_origins),
                    allowed_headers=["*"],
                    max_age_seconds=CORS_MAX_AGE,
                )
            ],
            opts=child,
        )
        self.cdn = self._cdn(name, spaces, base)
        # Read and write on this bucket only: a leaked key exposes nothing else in the account.
        self.key = do.SpacesKey(
            f"{name}-key",
            name=f"{base}-media",
            grants=[do.SpacesKeyGrantArgs(bucket=self.bucket.name, permission="readwrite")],
            opts=child,
        )
        self._expose(spaces)
        self.register_outputs(
            {
                "bucket": self.bucket.name,
                "cdn_endpoint": self.cdn.endpoint,
                "alias": self.alias_host,
            }
        )

    def _cdn(self, name: str, spaces: SpacesSettings, base: str) -> do.Cdn:
        """The CDN in front of the bucket, on its own subdomain with a certificate if asked."""
        self.certificate = None
        certificate_name: pulumi.Input[str] | None = spaces.cdn_certificate_name or None
        if spaces.cdn_custom_domain and spaces.cdn_dns_domain:
            # Let's Encrypt through DigitalOcean DNS (the domain must be managed there).
            self.certificate = do.Certificate(
                f"{name}-cdn-certificate",
                name=f"{base}-media",
                type="lets_encrypt",
                domains=[spaces.cdn_custom_domain],
                opts=pulumi.ResourceOptions(parent=self),
            )
            certificate_name = self.certificate.name
        return do.Cdn(
            f"{name}-cdn",
            origin=self.bucket.bucket_domain_name,
            custom_domain=spaces.cdn_custom_domain or None,
            certificate_name=certificate_name,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _expose(self, spaces: SpacesSettings) -> None:
        """`alias_host` (what media URLs use), `storage` and `output`."""
        self.alias_host = (
            pulumi.Output.from_input(spaces.cdn_custom_domain)
            if spaces.cdn_custom_domain
            else self.cdn.endpoint
        )
        self.storage = pulumi.Output.all(
            bucket=self.bucket.name,
            region=spaces.region,
            endpoint_host=self.bucket.endpoint,
            alias_host=self.alias_host,
            access_key_id=self.key.access_key,
            secret_access_key=self.key.secret_key,
        )
        self.output = {
            "bucket": self.bucket.name,
            "region": spaces.region,
            "endpoint": self.bucket.endpoint,
            "cdn_endpoint": self.cdn.endpoint,
            "alias_host": self.alias_host,
        }
