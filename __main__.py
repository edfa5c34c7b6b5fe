"""The Pulumi program: configuration -> components -> outputs (mastodon_data/program.py, in the
installed package). An operator's project runs it with these same two lines."""

from mastodon_data.program import run

run()
