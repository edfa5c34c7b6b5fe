"""Benchmark of droplets mode's read endpoint (issue 22's figures) on a stand-in lab of its own
(`mlrb`), in one run (`make bench-read-endpoint`, root, about 5 minutes): a stack with three
replicas behind the load balancer (HAProxy at its VPC address); how long a replica whose
PostgreSQL is killed keeps getting new connections (several kills, each replica restarted and
back before the next); reads (pgbench, a read-only script, persistent connections) through the
endpoint vs straight to one replica's pool, alternated over rounds: the throughput ratio with
several clients, the latency the proxy adds with one (medians). Prints the figures and writes
them to results/read_endpoint_timings.json (ignored); the lab is removed at the end, also on
failure.

    venv/bin/python -m lab.bench_read_endpoint [--kills N] [--clients N] [--pgbench-seconds N]
        [--rounds N]
"""
