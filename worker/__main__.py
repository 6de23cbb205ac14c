"""`python -m worker`: run a worker against REDIS_URL (see worker/runner.py, --help)."""

import sys

from .runner import main

sys.exit(main())
