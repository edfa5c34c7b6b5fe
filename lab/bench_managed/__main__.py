import sys

from lab.bench_managed.run import main

sys.exit(main())
