"""`with engine.connect() as c: c.execute(text("SELECT 1"))` on SQLite: pool + statement metrics.

python benchmarks/select1_sqlite.py [--quick] [--configs bare,pw,...] [--rounds N] [-n OPS]
"""

from __future__ import annotations

import sys

from _harness import interleaved_main

FULL = {"rounds": 40, "n": 2_500, "warmup": 3_000, "processes": 10}
QUICK = {"rounds": 2, "n": 100, "warmup": 50, "processes": 2}

if __name__ == "__main__":
    sys.exit(interleaved_main("select1_sqlite", __doc__.splitlines()[0], full=FULL, quick=QUICK))
