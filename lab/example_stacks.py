"""Example stacks: settings as they stand in Pulumi.<stack>.yaml (keys without the project
prefix), for the README's invalid-configuration table (lab/bad_inputs_table.py) and the tests
(tests/fixtures.py takes them from here)."""

from __future__ import annotations

DROPLETS = {
    "postgresMode": "droplets",
    "sshKeyIds": ["12345"],
    "adminCidrs": ["198.51.100.7/32"],
}
MANAGED = {"postgresMode": "managed", "appTag": "mastodon-app"}
SPACES = {"spacesBucket": "mastodon-media-test", "spacesRegion": "nyc3"}  # add to any mode


def host_entries(count: int, first_address: int = 1) -> list[dict]:
    """db1, db2, ...: public 192.0.2.<n>, private 10.0.0.<n>, n counting from first_address."""
    return [
        {
            "name": f"db{i + 1}",
            "publicAddress": f"192.0.2.{first_address + i}",
            "privateAddress": f"10.0.0.{first_address + i}",
        }
        for i in range(count)
    ]


def hosts_stack(count: int = 2, replicas: int = 1, first_address: int = 1) -> dict:
    """A hosts-mode stack of `count` hosts: the first the primary, then `replicas` replicas."""
    return {
        "postgresMode": "hosts",
        "replicaCount": replicas,
        "postgresAllowedSources": ["10.0.0.0/24"],
        "hosts": host_entries(count, first_address),
    }


def with_host(stack: dict, index: int, **changes) -> dict:
    """`stack` with the changes made to its host `index` (a change to None removes the key)."""
    hosts = [dict(host) for host in stack["hosts"]]
    hosts[index].update(changes)
    for key, value in changes.items():
        if value is None:
            del hosts[index][key]
    return {**stack, "hosts": hosts}
