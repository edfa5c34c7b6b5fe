"""mastodon-data: the data tier of a Mastodon instance as a Pulumi program.

    config/        the stack's settings, validated in one place (pure)
    stack_config   reads them through Pulumi's public API (the program's loader)
    plan           the replication steps: which host script runs where, in which order (pure)
    components/    one ComponentResource per concern (network, droplets, replication steps,
                   managed PostgreSQL, media, Redis)
    outputs, env   stack outputs and Mastodon's variables from resolved values (pure)
    cli/           the operator's `mastodon-data` command

The host scripts the replication steps ship (host/, stdlib only) and the Pulumi program itself
(__main__.py) live beside this package in the project directory.
"""
