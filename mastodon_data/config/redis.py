"""Redis: none (REDIS_URL is not managed here), a managed Valkey cluster, or an external one
given as the secret redisUrl."""

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
    if mode == "none" or not v.ok(*values):
        return None
    return RedisSettings(mode, values["redisSize"], values["redisNodeCount"], region)
