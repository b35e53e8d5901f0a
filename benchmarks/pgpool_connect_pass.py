"""with pool.connection(): pass on a psycopg_pool ConnectionPool of 5, PostgreSQL loopback.

    python benchmarks/pgpool_connect_pass.py [--quick] [--configs bare,pw,otel,...] [--rounds N] [-n OPS]

'bare' is the pool alone; 'otel' is OpenTelemetry's psycopg instrumentation alone.
"""

from __future__ import annotations

import sys

from _harness import interleaved_main

# Rounds of 5,000 operations (20 ms), as for SQLAlchemy's connect_pass: with 500 (2 ms), each
# round was mostly a process warming its caches after the previous configuration's ran on the
# same core, which costs the configuration with more code more (1.083-1.104x, against
# 1.069-1.086x with 5,000; docs/performance.md, "Closing the last two rows").
FULL = {"rounds": 30, "n": 5_000, "warmup": 5_000, "processes": 10}
QUICK = {"rounds": 1, "n": 20, "warmup": 5, "processes": 1}
CONFIGS = ("bare", "pw", "pw_py", "otel", "bare_aa")

if __name__ == "__main__":
    sys.exit(
        interleaved_main(
            "pgpool_connect_pass", __doc__.splitlines()[0], full=FULL, quick=QUICK, configs=CONFIGS,
            needs_pg=True,
        )
    )
