"""The Spaces stack of tests/lab/test_spaces_standin.py: the project's media component twice
(`media`, which Mastodon would use, and `other`, a second bucket with its own key), unprotected,
and each one's S3 variables as the project renders them for Mastodon's .env.production."""

import pulumi

from mastodon_data.components.spaces import SpacesMedia
from mastodon_data.config import SpacesSettings
from mastodon_data.env import ObjectStorage, s3_env

config = pulumi.Config()
for name in ("media", "other"):
    settings = SpacesSettings(
        bucket=config.require(f"{name}Bucket"), region="nyc3", cors_origins=("*",)
    )
    media = SpacesMedia(name, settings, protect=False)
    pulumi.export(f"{name}_env", media.storage.apply(lambda s: s3_env(ObjectStorage(**s))))
