"""`SELECT 1` on PostgreSQL over loopback TCP (psycopg 3), client pinned to one core.

    python benchmarks/select1_pg.py [--quick] [--configs bare,pw,...] [--rounds N] [-n OPS]

The server is the one at $POOLWATCH_BENCH_PG (default postgresql+psycopg://postgres@127.0.0.1:5432/test);
it is not pinned, so on a 2-core machine it mostly runs on the core the client leaves free.
"""

from __future__ import annotations

import sys

from _harness import interleaved_main

FULL = {"rounds": 60, "n": 500, "warmup": 1_000, "processes": 12}
QUICK = {"rounds": 2, "n": 50, "warmup": 20, "processes": 2}

if __name__ == "__main__":
    sys.exit(
        interleaved_main(
            "select1_pg", __doc__.splitlines()[0], full=FULL, quick=QUICK, needs_pg=True
        )
    )
