"""`python -m mastodon_data.cli <command>`: the same as the installed `mastodon-data`."""

import sys

from mastodon_data.cli import main

sys.exit(main())
