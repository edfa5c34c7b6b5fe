"""Benchmark of `pulumi up` of a hosts-mode stack through the engine, on a lab of its own (mlabb,
five hosts), in one run (issue 15). Each figure is the median of `--rounds` rounds:

- the first `up` (a primary and two replicas on fresh hosts) and a no-change `up` after it;
- at ~1 GB (`pgbench -i -s 70` on the primary): `pulumi up` adding one replica, a raw
  `pg_basebackup -X stream -c fast` of the same primary on the same host (the floor), and
  `pulumi up` adding three replicas at once, and three raw copies at once (what the machine
  allows);
- lag (p50/p99/max of the primary's pg_stat_replication, every 50 ms) under a pgbench write load,
  and rows lost once every replica has replayed the primary's last position;
- catch-up after a 30 s cut of a replica's link under load: seconds from the link's return until
  the replica has replayed the primary's position of that moment, and rows lost.

Only `pulumi up` itself is timed (the configuration is written before). Prints the figures
against the issue's targets and writes them to results/lab_timings.json (ignored). Root; takes
about ten minutes. The lab is removed at the end, also on failure.

    venv/bin/python -m lab.bench [--rounds N] [--scale S]     # from the project directory

lab.py: the bench's lab, its stack and commands on its hosts; load.py: write loads, lag, link
cuts, rows lost; observer.py: what runs where during an `up`; figures.py: medians, ratios and
the targets; rounds.py: the rounds and the run.
"""
