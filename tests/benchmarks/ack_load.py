"""Ack latency only: `python -m tests.benchmarks --only ack slow`, kept under its old name.

    .venv/bin/python -m tests.benchmarks.ack_load [--quick] [--json PATH] [--profile DIR]

The measurement itself (bot beside a bare bolt app, one Python load generator, wrk no
longer needed) lives in suite.py and loadgen.py.
"""

from __future__ import annotations

import sys

from tests.benchmarks.suite import main

if __name__ == "__main__":
    sys.exit(main(["--only", "ack", "slow", *sys.argv[1:]]))
