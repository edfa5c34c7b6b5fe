import sys

from lab.bench_read_endpoint.run import main

sys.exit(main())
