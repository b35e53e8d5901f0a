"""with pool.connection(): pass on a psycopg_pool ConnectionPool of 5, PostgreSQL loopback.

    python benchmarks/pgpool_connect_pass.py [--quick] [--configs bare,pw,otel,...] [--rounds N] [-n OPS]

'bare' is the pool alone; 'otel' is OpenTelemetry's psycopg instrumentation alone.
"""

from __future__ import annotations

import sys

from _harness import interleaved_main

# 24 processes: on a 5 µs operation each process's memory layout moves the ratio by up to 10 %
# (the A/A control's per-process medians ranged 0.88-1.10x), so the median of 8 carried about
# 2 % of noise, a fifth of the whole 1.10x budget (docs/performance.md, "The last row met").
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
