"""The stand-in's API, one module per resource of DigitalOcean's API v2 (each with its slice of
the account's state and its routes), composed by lab/standin/account.py:

    catalog          the account, regions, sizes, images
    actions          actions of every resource (GET /v2/actions/{id})
    vpcs, tags, ssh_keys
    machines         the lab hosts behind droplets (numbers, addresses, power sequences)
    droplets, droplet_actions
    volumes          volumes and their actions
    firewalls        cloud firewalls, and the packet filters that enforce them
    spaces_keys, cdn, buckets  (the buckets' S3 side: lab/standin/spaces.py)
    databases        managed PostgreSQL clusters: nodes, databases, users, trusted sources
    base             what they share: errors, requests, paging, timings, faults, `Resource`
"""
