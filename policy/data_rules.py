"""Data is kept: what holds data is protected (a run that would replace or delete it stops,
unless the pack's allowDataLoss lets one run do it), database droplets ignore their create-only
inputs and are monitored, connection pools are replaced delete-first."""

from __future__ import annotations

import re

from pulumi_policy import PolicyConfigSchema, ResourceValidationPolicy
from reading import (
    DATABASE_CLUSTER,
    DATABASE_POOL,
    DATABASE_REPLICA,
    DROPLET,
    SPACES_BUCKET,
    VOLUME,
    get,
    known,
    words,
)

DB_DROPLET_TAG = re.compile(r"^mastodon-data-.+-(primary|replica|db)$")
# Droplet inputs whose change makes a new droplet (and loses a root disk's database); they only
# matter at creation, so the program ignores them afterwards.
DROPLET_CREATE_ONLY = ("sshKeys", "image", "userData")
ALLOW_DATA_LOSS = "allowDataLoss"  # this policy's switch for the one run that may lose data


def _holds_data(resource_type: str, props) -> str | None:
    """What the resource is when it holds data the stack must keep, else None."""
    if resource_type == DROPLET:
        return "database droplet" if _is_database_droplet(props, known) else None
    kinds = {VOLUME: "volume", DATABASE_REPLICA: "read-only node", SPACES_BUCKET: "Spaces bucket"}
    if resource_type == DATABASE_CLUSTER:
        return "database cluster"
    return kinds.get(resource_type)


def _is_database_droplet(props, read=get) -> bool:
    """By its name, else by its tags (other resources' outputs, so read only when needed: with
    `get` a tag not known yet makes the SDK say the rule cannot judge before `up`)."""
    name = str(known(props, "name", "") or "")
    if "mastodon-db" in name:
        return True
    tags = words(read(props, "tags", []))
    return any("mastodon-db" in t or DB_DROPLET_TAG.match(t) for t in tags)


def validate_data_kept(args, report) -> None:
    """What holds data is `protect`ed, so the engine stops a run that would replace or delete it
    (with the resource and the reason); a database droplet ignores the inputs that would replace
    it; a connection pool is deleted before its replacement is made (no name collision). The
    pack's `allowDataLoss` lets one run replace or remove unprotected data on purpose."""
    opts = args.opts
    what = _holds_data(args.resource_type, args.props)
    allowed = bool((args.get_config() or {}).get(ALLOW_DATA_LOSS))
    if what and not getattr(opts, "protect", False) and not allowed:
        report(
            f"the {what} {args.name} is not protected: a change that replaces it, or its "
            "removal, would destroy its data. Fix: pulumi config rm mastodon-data:protectData "
            "(on by default). To replace or remove it on purpose, for one run: pulumi config "
            "set mastodon-data:protectData false and pass a --policy-pack-config with "
            f'{{"data-kept": {{"{ALLOW_DATA_LOSS}": true}}}} (docs/operators/lifecycle.md)'
        )
    if what == "database droplet":
        ignored = set(getattr(opts, "ignore_changes", None) or [])
        missing = [k for k in DROPLET_CREATE_ONLY if k not in ignored and _snake(k) not in ignored]
        if missing:
            report(
                f"the database droplet {args.name} does not ignore {', '.join(missing)}: a change "
                "of one would replace the droplet and the database on its disk. Fix: "
                f"ignore_changes={list(DROPLET_CREATE_ONLY)} (keys: mastodon-data:authorizedKeys)"
            )
    if args.resource_type == DATABASE_POOL and not getattr(opts, "delete_before_replace", False):
        report(
            f"the connection pool {args.name} would be replaced create-first: DigitalOcean "
            "refuses a second pool of the same name. Fix: delete_before_replace=True"
        )


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def validate_database_droplets_monitored(args, report) -> None:
    """Droplets that hold the databases (name with mastodon-db, or the role tags) have
    DigitalOcean monitoring on (the metrics agent: disk, memory, load alerts)."""
    if args.resource_type != DROPLET:
        return
    name = str(known(args.props, "name", "") or "")
    if _is_database_droplet(args.props) and known(args.props, "monitoring", False) is not True:
        report(
            f"database droplet {name or args.name} has monitoring off. Fix: monitoring=True "
            "(DigitalOcean's metrics agent; alerts on disk, memory and load)."
        )


def policies() -> list:
    return [
        ResourceValidationPolicy(
            name="data-kept",
            description="What holds data (database droplets, volumes, database clusters, "
            "read-only nodes, Spaces buckets) is protected, so no run replaces or deletes it "
            "unless the run allows it; database droplets ignore create-only inputs; pools are "
            "replaced delete-first.",
            validate=validate_data_kept,
            config_schema=PolicyConfigSchema(
                properties={ALLOW_DATA_LOSS: {"type": "boolean", "default": False}}
            ),
        ),
        ResourceValidationPolicy(
            name="database-droplets-monitored",
            description="Droplets holding the databases have DigitalOcean monitoring on.",
            validate=validate_database_droplets_monitored,
        ),
    ]
