"""Managed Valkey: a database cluster of engine `valkey` (lab/standin/resources/databases.py
holds the cluster's record) and its configuration, `GET/PATCH /v2/databases/{id}/config` and
`GET/PUT /v2/databases/{id}/eviction_policy`, applied to every node's valkey-server.

As DigitalOcean has it (docs/developers/standin.md; the provider's resource_database_valkey_config
.go, godo's databases.go, DigitalOcean's OpenAPI description): version 8, user `default` with the
cluster's password, TLS on 25061 (with `valkey_ssl` false, plain TCP on 25060 as well, as
DigitalOcean opens it for Caching), a publicly trusted certificate (here: the lab's public CA);
no databases, users, pools or read-only nodes. The config is returned as it was PATCHed (the
provider sends dashed eviction policies where the OpenAPI description has underscored ones); the
eviction_policy endpoint speaks the underscored form of the same setting.
"""

from __future__ import annotations

from .base import Request, Resource, at, json_body, unprocessable

ENGINE = "valkey"
VERSIONS = ("8",)
TLS_PORT = 25061
PLAIN_PORT = 25060  # open only while valkey_ssl is false
PORTS = (PLAIN_PORT, TLS_PORT)  # both filtered by the trusted sources
USER = "default"
POLICIES = ("noeviction", "allkeys-lru", "allkeys-random", "volatile-lru", "volatile-random",
            "volatile-ttl")  # fmt: skip
# A new cluster's config (the OpenAPI description's defaults and examples).
DEFAULT_CONFIG = {
    "valkey_maxmemory_policy": "noeviction",
    "valkey_ssl": True,
    "valkey_timeout": 300,
    "valkey_lfu_log_factor": 10,
    "valkey_lfu_decay_time": 1,
    "valkey_notify_keyspace_events": "",
    "valkey_persistence": "rdb",
    "valkey_acl_channels_default": "allchannels",
    "valkey_io_threads": 1,
    "valkey_number_of_databases": 16,
    "valkey_pubsub_client_output_buffer_limit": 64,
    "frequent_snapshots": True,
    "valkey_active_expire_effort": 1,
}
INTEGER_RANGES = {  # the OpenAPI description's bounds
    "valkey_timeout": (0, 31536000),
    "valkey_lfu_log_factor": (0, 100),
    "valkey_lfu_decay_time": (1, 120),
    "valkey_io_threads": (1, 32),
    "valkey_number_of_databases": (1, 128),
    "valkey_pubsub_client_output_buffer_limit": (32, 512),
    "valkey_active_expire_effort": (1, 10),
}
CHOICES = {
    "valkey_persistence": ("off", "rdb"),
    "valkey_acl_channels_default": ("allchannels", "resetchannels"),
}
KEYSPACE_EVENTS = set("KEg$lshzxeA")
# Settings valkey-server takes only at its start (DigitalOcean restarts the service for them).
RESTART_SETTINGS = ("databases", "io-threads")
# The OpenAPI description's notes on what Valkey clusters do not have.
NOT_SUPPORTED = {
    "dbs": "Database management is not supported for Caching or Valkey clusters.",
    "users": "User management is not supported for Caching or Valkey clusters.",
    "pools": "Connection pools are not supported for Caching or Valkey clusters.",
    "replicas": "Read-only replicas are not supported for Caching or Valkey clusters.",
}


def connection(cluster: dict, host: str) -> dict:
    password = cluster["password"]
    return {
        "uri": f"rediss://{USER}:{password}@{host}:{TLS_PORT}",
        "database": "",
        "host": host,
        "port": TLS_PORT,
        "user": USER,
        "password": password,
        "ssl": True,
    }


def new_cluster_fields(password: str) -> dict:
    """What a Valkey cluster's record holds besides the fields of every cluster."""
    return {
        "users": {USER: {"role": "primary", "password": password}},
        "dbs": [],
        "valkey_config": dict(DEFAULT_CONFIG),
    }


def dashed(policy: str) -> str:
    return policy.replace("_", "-")


def checked_value(name: str, value) -> None:
    """The API's refusal of one setting, if it has one."""
    if name == "valkey_maxmemory_policy":
        ok = isinstance(value, str) and dashed(value) in POLICIES
    elif name in INTEGER_RANGES:
        low, high = INTEGER_RANGES[name]
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    elif name in CHOICES:
        ok = value in CHOICES[name]
    elif name == "valkey_notify_keyspace_events":
        ok = isinstance(value, str) and len(value) <= 32 and set(value) <= KEYSPACE_EVENTS
    else:  # valkey_ssl, frequent_snapshots
        ok = isinstance(value, bool)
    if not ok:
        raise unprocessable(f"config.{name}: invalid value {value!r}")


def server_settings(config: dict, memory_gib: int) -> dict[str, str]:
    """The valkey-server directives of a cluster's config (node size `memory_gib`)."""
    limit = config["valkey_pubsub_client_output_buffer_limit"]
    snapshots = config["valkey_persistence"] == "rdb" and config["frequent_snapshots"]
    return {
        # The stand-in's choice: DigitalOcean does not publish its maxmemory figure.
        "maxmemory": f"{memory_gib * 768}mb",
        "maxmemory-policy": dashed(config["valkey_maxmemory_policy"]),
        "timeout": str(config["valkey_timeout"]),
        "lfu-log-factor": str(config["valkey_lfu_log_factor"]),
        "lfu-decay-time": str(config["valkey_lfu_decay_time"]),
        "notify-keyspace-events": config["valkey_notify_keyspace_events"],
        # "RDB dumps each 10 minutes if any key is changed" (the OpenAPI description)
        "save": "600 1" if snapshots else "",
        "acl-pubsub-default": config["valkey_acl_channels_default"],
        "client-output-buffer-limit": f"pubsub {limit}mb {limit // 4}mb 60",
        "active-expire-effort": str(config["valkey_active_expire_effort"]),
        "port": "0" if config["valkey_ssl"] else str(PLAIN_PORT),
        "databases": str(config["valkey_number_of_databases"]),
        "io-threads": str(config["valkey_io_threads"]),
    }


class ValkeyConfigs(Resource):
    """A Valkey cluster's config: on the cluster's record (`valkey_config`), applied to its
    nodes through the backend (lab/standin/backend.py, `configure_valkey`)."""

    def routes(self):
        base = "/v2/databases/{id}"
        return [
            *at(f"{base}/config", GET=self.get_config, PATCH=self.patch_config),
            *at(f"{base}/eviction_policy", GET=self.get_policy, PUT=self.put_policy),
        ]

    def valkey_cluster(self, request: Request) -> dict:
        cluster = self.account.databases.find(request.params["id"])
        if cluster["engine"] != ENGINE:
            raise unprocessable(f"the stand-in models the config of {ENGINE} clusters only")
        return cluster

    def get_config(self, request: Request):
        return {"config": dict(self.valkey_cluster(request)["valkey_config"])}

    def patch_config(self, request: Request):
        self.valkey_cluster(request)
        changes = json_body(request).get("config")
        if not isinstance(changes, dict):
            raise unprocessable("config: an object of settings")
        for name, value in changes.items():
            if name not in DEFAULT_CONFIG:
                raise unprocessable(f"config.{name} is not a setting of {ENGINE} clusters")
            checked_value(name, value)
        self.apply(self.account.databases.online(request), changes)
        return 200, None

    def get_policy(self, request: Request):
        policy = self.valkey_cluster(request)["valkey_config"]["valkey_maxmemory_policy"]
        return {"eviction_policy": dashed(policy).replace("-", "_")}

    def put_policy(self, request: Request):
        self.valkey_cluster(request)
        policy = json_body(request).get("eviction_policy")
        if not isinstance(policy, str) or "-" in policy or dashed(policy) not in POLICIES:
            raise unprocessable(f"eviction_policy {policy!r} is not an eviction policy")
        self.apply(self.account.databases.online(request), {"valkey_maxmemory_policy": policy})
        return 204, None

    def apply(self, cluster: dict, changes: dict) -> None:
        """The changed config saved and given to every node (the primary first)."""
        size = self.account.databases.memory_gib(cluster)
        before = server_settings(cluster["valkey_config"], size)
        cluster["valkey_config"] = {**cluster["valkey_config"], **changes}
        after = server_settings(cluster["valkey_config"], size)
        changed = {k: v for k, v in after.items() if before[k] != v}
        if changed:
            for node in cluster["nodes"]:
                self.account.backend.configure_valkey(cluster, node, changed)
        self.save()
