#!/usr/bin/env python3
"""Prints the table of docs/operators/invalid-configurations.md: each case is run through the real
validation (mastodon_data/config, then the exporters' builds the program ships) and the table
shows the message it gets. A unit test runs
the same cases, so the table cannot drift from the code.

    venv/bin/python -m lab.bad_inputs_table > /tmp/table.md    # from the project directory
"""

from __future__ import annotations

import sys

from lab.example_stacks import DROPLETS, MANAGED, hosts_stack, with_host
from lab.example_stacks import SPACES as MEDIA
from mastodon_data.config import SECRET_KEYS, ConfigError, parse_settings
from mastodon_data.monitoring import builds

HOSTS = hosts_stack(first_address=10)  # db1 at 192.0.2.10, db2 at 192.0.2.11
ALL = frozenset(SECRET_KEYS)
SPACES = {**MANAGED, **MEDIA}
NONE: frozenset = frozenset()

# (what is wrong, stack settings, secrets set)
CASES: list[tuple[str, dict, frozenset]] = [
    ("unknown mode", {**DROPLETS, "postgresMode": "cluster"}, ALL),
    ("unknown region", {**DROPLETS, "region": "nyc9"}, ALL),
    ("VPC range not a network", {**DROPLETS, "vpcCidr": "10.118.0.0/33"}, ALL),
    ("VPC range with host bits", {**DROPLETS, "vpcCidr": "10.118.0.1/20"}, ALL),
    ("VPC range public", {**DROPLETS, "vpcCidr": "8.8.0.0/16"}, ALL),
    ("VPC range too large", {**DROPLETS, "vpcCidr": "10.0.0.0/8"}, ALL),
    ("unknown image", {**DROPLETS, "image": "centos-9-x64"}, ALL),
    ("bad size slug", {**DROPLETS, "primarySize": "large"}, ALL),
    ("replica count beyond limits", {**DROPLETS, "replicaCount": 11}, ALL),
    ("negative replica count", {**DROPLETS, "replicaCount": -1}, ALL),
    ("replica count not a number", {**DROPLETS, "replicaCount": "two"}, ALL),
    ("unknown PostgreSQL version", {**DROPLETS, "postgresVersion": 14}, ALL),
    ("data volume of 0 GiB", {**DROPLETS, "dataVolumeSize": 0}, ALL),
    ("data volume size in hosts mode", {**HOSTS, "dataVolumeSize": 40}, ALL),
    ("no SSH key for droplets", {**DROPLETS, "sshKeyIds": []}, ALL),
    ("SSH open to the internet", {**DROPLETS, "adminCidrs": ["0.0.0.0/0"]}, ALL),
    ("admin CIDR not a CIDR", {**DROPLETS, "adminCidrs": ["office"]}, ALL),
    ("0.0.0.0/0 on 5432", {**DROPLETS, "postgresAllowedSources": ["0.0.0.0/0"]}, ALL),
    ("public range on 5432", {**DROPLETS, "postgresAllowedSources": ["203.0.113.0/24"]}, ALL),
    ("5432 source outside the VPC", {**DROPLETS, "postgresAllowedSources": ["10.9.0.0/24"]}, ALL),
    ("database name with a dash", {**DROPLETS, "dbName": "mastodon-production"}, ALL),
    ("app role is the superuser", {**DROPLETS, "dbUser": "postgres"}, ALL),
    ("replication role = app role", {**DROPLETS, "replicationUser": "mastodon"}, ALL),
    ("WAL size without unit", {**DROPLETS, "walKeepSize": "1024"}, ALL),
    ("slot limit below wal_keep_size", {**DROPLETS, "maxSlotWalKeepSize": "512MB"}, ALL),
    ("replication timeout without unit", {**DROPLETS, "replicationTimeout": "10"}, ALL),
    ("replication timeout too short", {**DROPLETS, "replicationTimeout": "500ms"}, ALL),
    (
        "renewal window as long as the certificate",
        {**DROPLETS, "certificateDays": 30, "certificateRenewDays": 30},
        ALL,
    ),
    ("unknown CA rotation stage", {**DROPLETS, "caRotation": "rotate"}, ALL),
    ("misspelt key", {**DROPLETS, "replicaCont": 2}, ALL),
    ("max_connections below the pool", {**DROPLETS, "pumaProcesses": 8, "sidekiqThreads": 50}, ALL),
    ("pool on PostgreSQL's port", {**DROPLETS, "pgbouncerPort": 5432}, ALL),
    (
        "PgBouncer's open files below its clients (Hachyderm, 2025)",
        {**DROPLETS, "pgbouncerMaxClientConn": 2000, "pgbouncerOpenFiles": 1024},
        ALL,
    ),
    ("PgBouncer's client slots below Mastodon's clients", {**DROPLETS, "sidekiqThreads": 500,
     "maxConnections": 600}, ALL),
    ("hosts listed in droplets mode", {**DROPLETS, "hosts": HOSTS["hosts"]}, ALL),
    ("hosts mode without hosts", {**HOSTS, "hosts": []}, ALL),
    ("fewer hosts than replicas", {**HOSTS, "replicaCount": 3}, ALL),
    (
        "duplicate host addresses",
        with_host(HOSTS, 1, publicAddress="192.0.2.10", privateAddress="10.0.0.10"),
        ALL,
    ),
    ("private address not an IP", with_host(HOSTS, 1, privateAddress="db2.internal"), ALL),
    ("SSH port out of range", with_host(HOSTS, 0, sshPort=70000), ALL),
    ("misspelt host key", with_host(HOSTS, 0, privateAdress="x"), ALL),
    ("malformed host key", with_host(HOSTS, 0, hostKey="ssh-rsa !"), ALL),
    ("data device not under /dev", with_host(HOSTS, 1, dataDevice="sdb"), ALL),
    ("missing secrets", DROPLETS, frozenset()),
    ("managed: no app source for the firewalls", {"postgresMode": "managed"}, NONE),
    ("managed: droplet keys set", {**MANAGED, "replicaCount": 2, "primarySize": "s-4vcpu-8gb"},
     NONE),
    ("managed: unknown size slug", {**MANAGED, "dbClusterSize": "db-large"}, NONE),
    ("managed: standby on the smallest plan",
     {**MANAGED, "dbClusterSize": "db-s-1vcpu-1gb", "poolSize": 20, "sidekiqThreads": 5,
      "streamingDbPool": 5}, NONE),
    ("managed: pool larger than the cluster allows", {**MANAGED, "poolSize": 120}, NONE),
    ("managed: pool smaller than Mastodon's clients", {**MANAGED, "poolSize": 30}, NONE),
    (
        "managed: Mastodon's clients beyond the cluster's limit",
        {**MANAGED, "dbClusterSize": "db-s-1vcpu-2gb", "poolSize": 47, "sidekiqThreads": 100},
        NONE,
    ),
    ("managed: replica in another region", {**MANAGED, "managedReplicaRegion": "ams3"}, NONE),
    ("managed: firewall open to all", {**MANAGED, "appCidrs": ["0.0.0.0/0"]}, NONE),
    ("bucket name not DNS-compatible", {**MANAGED, "spacesBucket": "Media.Example"}, NONE),
    ("Spaces region without Spaces", {**SPACES, "spacesRegion": "nyc1"}, NONE),
    ("custom CDN domain without certificate",
     {**SPACES, "cdnCustomDomain": "media.example.social"}, NONE),
    ("CDN domain outside the DNS domain",
     {**SPACES, "cdnCustomDomain": "media.example.social", "cdnDnsDomain": "example.org"}, NONE),
    ("exporters not built where exportersHome says",
     {**DROPLETS, "monitoringSources": ["10.10.0.5/32"], "exportersHome": "/srv/no-exporters"},
     ALL | {"monitorPassword"}),
    ("alert email not an address", {**DROPLETS, "alertEmails": ["ops.example.org"]}, ALL),
    ("alert CPU threshold over 100 %",
     {**DROPLETS, "alertEmails": ["ops@example.org"], "alertCpuPercent": 150}, ALL),
    ("alert window DigitalOcean does not have",
     {**MANAGED, "alertEmails": ["ops@example.org"], "alertPolicyWindow": "15m"}, NONE),
    ("Slack channel without its webhook", {**MANAGED, "alertSlackChannel": "#db"}, NONE),
    ("Slack webhook without a channel", MANAGED, frozenset({"alertSlackUrl"})),
    ("managed: exporters' sources (DigitalOcean serves the metrics)",
     {**MANAGED, "monitoringSources": ["10.118.5.0/24"]}, NONE),
    ("unknown Redis mode", {**MANAGED, "redisMode": "redis"}, NONE),
    ("external Redis without its URL", {**MANAGED, "redisMode": "external"}, NONE),
]  # fmt: skip


def message(raw: dict, secrets: frozenset) -> str:
    """What the program's preview says (the settings, then the exporters it ships)."""
    try:
        settings = parse_settings(raw, secrets)
        if settings.replication:
            builds.locate(settings.replication)
    except ConfigError as exc:
        return str(exc)
    return ""


def main() -> int:
    print("| invalid configuration | message (preview stops) |")
    print("|---|---|")
    for what, raw, secrets in CASES:
        text = message(raw, secrets).replace("|", "\\|").replace("\n", "<br>")
        print(f"| {what} | {text} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
