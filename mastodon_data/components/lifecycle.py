"""Resource options of what holds data, in one place so every such resource gets the same.

- `keep_data`: Pulumi's `protect` (setting protectData, on by default) on droplets, volumes,
  database clusters, read-only nodes and buckets: a run that would replace or delete one stops
  with the resource and the reason, until the operator turns protectData off for that run.
- `DROPLET_IGNORED`: droplet inputs the provider can only apply by making a new droplet, on a
  droplet whose disk holds a database; they matter at create only (keys: see authorizedKeys).
- `CREATE_ONLY_NAME`: names given when a resource is made: a volume's or a tag's new name
  would mean a new one. A blue/green upgrade's new tier is named after its version, and its
  volumes keep that name once the old tier is retired.
- `POOL_OPTIONS`: a connection pool has no update, and Pulumi's default create-before-delete
  makes the new pool under the old one's name first, which DigitalOcean refuses.
"""

from __future__ import annotations

import pulumi

DROPLET_IGNORED = ["sshKeys", "image", "userData"]
CREATE_ONLY_NAME = pulumi.ResourceOptions(ignore_changes=["name"])


def keep_data(protect: bool, opts: pulumi.ResourceOptions | None = None) -> pulumi.ResourceOptions:
    """`opts` with `protect` as protectData says (a resource holding data)."""
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(protect=protect))


def data_droplet(
    protect: bool, opts: pulumi.ResourceOptions | None = None
) -> pulumi.ResourceOptions:
    """A droplet holding a database: kept, and never replaced for a create-only input."""
    return keep_data(protect, pulumi.ResourceOptions.merge(
        opts, pulumi.ResourceOptions(ignore_changes=DROPLET_IGNORED)
    ))  # fmt: skip


POOL_OPTIONS = pulumi.ResourceOptions(delete_before_replace=True)
