import sys

from lab.standin.service import main

sys.exit(main())
