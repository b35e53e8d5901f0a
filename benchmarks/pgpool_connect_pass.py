"""with pool.connection(): pass on a psycopg_pool ConnectionPool of 5, PostgreSQL loopback.

    python benchmarks/pgpool_connect_pass.py [--quick] [--configs bare,pw,otel,...] [--rounds N] [-n OPS]

'bare' is the pool alone; 'otel' is OpenTelemetry's psycopg instrumentation alone.
"""

from __future__ import annotations

import sys

from _harness import interleaved_main

# 24 processes: on so short an operation each process's memory layout moves the ratio by more
# than the budget's margin, and the median of 8 did not settle (docs/performance.md, "The last
# row met").
FULL = {"rounds": 48, "n": 500, "warmup": 1_000, "processes": 24}
QUICK = {"rounds": 1, "n": 20, "warmup": 5, "processes": 1}
CONFIGS = ("bare", "pw", "pw_py", "otel", "bare_aa")

if __name__ == "__main__":
    sys.exit(
        interleaved_main(
            "pgpool_connect_pass", __doc__.splitlines()[0], full=FULL, quick=QUICK, configs=CONFIGS,
            needs_pg=True,
        )
    )
