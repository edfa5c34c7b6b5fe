"""`python -m lab.bench`: the benchmark (see lab/bench/__init__.py)."""

import sys

from lab.bench.rounds import main

sys.exit(main())
