"""Benchmark of managed mode (issue 20's figures) on a stand-in lab of its own (`mlmb`), in one
run (`make bench-managed`, root, about 5 minutes): the prod-like stack's `pulumi up` from
nothing beside the provider's own waits (from the stand-in's request log), a second no-change
`up` and a `preview --refresh`, pgbench through the pool vs direct, and the standby's takeover
under writes through `.env.production` from the app droplet. Prints the figures and writes them
to results/managed_timings.json (ignored); the lab is removed at the end, also on failure.

    venv/bin/python -m lab.bench_managed [--takeovers N] [--clients N] [--pgbench-seconds N]
"""
