"""Redis: none (REDIS_URL is not managed here), a managed Valkey cluster, or an external one
given as the secret redisUrl; with a managed one, optionally a second cluster for Mastodon's
cache (redisCache)."""

from __future__ import annotations

from collections.abc import Collection

from mastodon_data.config.checks import Field, Validation, set_command
from mastodon_data.config.managed import NODE_COUNTS, database_size
from mastodon_data.config.project import PROJECT
from mastodon_data.config.records import RedisSettings
from mastodon_data.config.secrets import REDIS_URL_KEY

REDIS_MODES = ("none", "managed", "external")
FIELDS = (
    Field("redisMode", example="managed", choices=REDIS_MODES),
    database_size("redisSize"),
    Field("redisNodeCount", example=2, allowed=NODE_COUNTS),
    Field("redisCache", example="true"),
)


def parse_redis(
    v: Validation, secrets_present: Collection[str], region: str | None
) -> RedisSettings | None:
    values = v.read(FIELDS)
    mode = values["redisMode"]
    if mode == "managed" and (REDIS_URL_KEY in v.raw or REDIS_URL_KEY in secrets_present):
        v.add(
            REDIS_URL_KEY,
            "[secret]",
            "set, but redisMode managed makes its own Valkey",
            f"pulumi config rm {PROJECT}:{REDIS_URL_KEY}, or "
            f"{set_command('redisMode', 'external')}",
        )
    if values["redisCache"] and mode != "managed":
        v.add(
            "redisCache",
            "true",
            f"needs redisMode managed (the cache is a Valkey cluster made here), not {mode}",
            f"{set_command('redisMode', 'managed')}, or pulumi config rm {PROJECT}:redisCache",
        )
    if mode == "none" or not v.ok(*values):
        return None
    size, nodes, cache = values["redisSize"], values["redisNodeCount"], values["redisCache"]
    return RedisSettings(mode, size, nodes, region, cache)
