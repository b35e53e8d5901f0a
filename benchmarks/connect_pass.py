"""`with engine.connect(): pass` on SQLite (QueuePool): the pool checkout/checkin path alone.

python benchmarks/connect_pass.py [--quick] [--configs bare,pw,...] [--rounds N] [-n OPS]
"""

from __future__ import annotations

import sys

from _harness import interleaved_main

FULL = {"rounds": 30, "n": 5_000, "warmup": 5_000, "processes": 10}
QUICK = {"rounds": 2, "n": 200, "warmup": 50, "processes": 2}

if __name__ == "__main__":
    sys.exit(interleaved_main("connect_pass", __doc__.splitlines()[0], full=FULL, quick=QUICK))
