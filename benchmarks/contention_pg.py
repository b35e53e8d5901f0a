"""32 threads contending for a QueuePool of 5 on PostgreSQL: 6,400 short queries per round.

    python benchmarks/contention_pg.py [--quick] [--configs bare,pw,...] [--rounds N] [-n QUERIES]

Each round starts 32 threads behind a barrier; each runs its share of
`with engine.connect() as c: c.execute(text("SELECT 1"))` against pool_size=5, max_overflow=0.
The time is from the barrier to the last join. The client is pinned to one core and its server
backends to the same core (``--server-cpu`` puts them elsewhere; see docs/performance.md for why
one core).
"""

from __future__ import annotations

import sys

from _harness import interleaved_main

# 42 rounds: long runs put poolwatch's cost here within half a percent of the 1.02x limit, and
# the median of 21 rounds moved by more than that from run to run (docs/performance.md).
FULL = {"rounds": 42, "n": 6_400, "warmup": 640, "processes": 14}
QUICK = {"rounds": 2, "n": 320, "warmup": 64, "processes": 2}

if __name__ == "__main__":
    sys.exit(
        interleaved_main(
            "contention_pg",
            __doc__.splitlines()[0],
            full=FULL,
            quick=QUICK,
            needs_pg=True,
            params={"threads": 32, "pool_size": 5},
        )
    )
