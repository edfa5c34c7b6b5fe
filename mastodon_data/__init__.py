"""mastodon-data: the data tier of a Mastodon instance as a Pulumi program.

config/        the stack's settings, validated in one place (pure)
stack_config   reads them through Pulumi's public API (the program's loader)
plan           the replication steps: which host script runs where, in which order (pure)
components/    one ComponentResource per concern (network, droplets, replication steps,
               managed PostgreSQL, media, Redis)
outputs, env   stack outputs and Mastodon's variables from resolved values (pure)
database       the stack's PostgreSQL as Mastodon's role reaches it, from the outputs
pulumi_cli     `pulumi` commands on one stack (the operator's commands and the lab)
cli/           the operator's `mastodon-data` command
host/          what runs on a database server: the scripts the steps ship on stdin
               (stdlib only; package data, never imported by the program)
"""
