"""`python -m tests.benchmarks`: every figure in one run (see suite.py)."""

import sys

from tests.benchmarks.suite import main

sys.exit(main())
