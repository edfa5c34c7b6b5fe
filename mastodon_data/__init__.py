"""mastodon-data: the data tier of a Mastodon instance as a Pulumi program.

program        the Pulumi program: configuration -> components -> outputs (a project's
               __main__.py calls program.run())
config/        the stack's settings, validated in one place (pure)
stack_config   the one loader of a stack's configuration, for the program and the commands
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
