"""32 threads sharing a psycopg_pool ConnectionPool of 5 on PostgreSQL, SELECT 1 each.

    python benchmarks/pgpool_contention.py [--quick] [--configs bare,pw,otel,...] [--rounds N] [-n OPS]

'bare' is the pool alone; 'otel' is OpenTelemetry's psycopg instrumentation alone.
"""

from __future__ import annotations

import sys

from _harness import interleaved_main

FULL = {"rounds": 30, "n": 6_400, "warmup": 1_000, "processes": 6}
QUICK = {"rounds": 1, "n": 20, "warmup": 5, "processes": 1}
CONFIGS = ("bare", "pw", "pw_py", "otel", "bare_aa")

if __name__ == "__main__":
    sys.exit(
        interleaved_main(
            "pgpool_contention", __doc__.splitlines()[0], full=FULL, quick=QUICK, configs=CONFIGS,
            needs_pg=True,
        )
    )
