"""Memory per instrumented pool (tracemalloc), poolwatch with default settings.

    python benchmarks/memory.py [--quick] [--pools 200]

N SQLite engines (QueuePool, one database file) are created and each used once *before* the
measurement starts, so SQLAlchemy's own first-use allocations (compiled cache, pool, DBAPI
connection) are not counted. Then, under tracemalloc:

1. `poolwatch.instrument(engine, name=..., registry=<one shared CollectorRegistry>)` on each;
2. one more `connect()` + `SELECT 1` on each, which creates the pool's statement series.

Reported: allocated bytes per pool after step 1 and after step 2 (gc.collect() before each
reading), and the same step 2 on N bare engines as a control (should be about 0).
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import tracemalloc
from typing import Any

from _harness import base_parser, write_json


def _engines(n: int, url: str) -> list[Any]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import QueuePool

    engines = []
    for _ in range(n):
        e = create_engine(url, poolclass=QueuePool)
        with e.connect() as c:
            c.execute(text("SELECT 1"))
        engines.append(e)
    return engines


def _use(engines: list[Any]) -> None:
    from sqlalchemy import text

    for e in engines:
        with e.connect() as c:
            c.execute(text("SELECT 1"))


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def measure(n: int, url: str) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    import poolwatch

    # Control: a second use of bare engines allocates (almost) nothing that stays.
    bare = _engines(n, url)
    _use(bare)
    tracemalloc.start()
    m0 = _traced()
    _use(bare)
    control = (_traced() - m0) / n
    tracemalloc.stop()
    for e in bare:
        e.dispose()
    del bare

    engines = _engines(n, url)
    registry = CollectorRegistry()
    tracemalloc.start(1)
    m0 = _traced()
    handles = [
        poolwatch.instrument(e, name=f"mem-{i}", registry=registry, tracing=False)
        for i, e in enumerate(engines)
    ]
    m1 = _traced()
    _use(engines)
    m2 = _traced()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    top = [
        {
            "where": str(s.traceback[0]).replace(os.getcwd() + os.sep, ""),
            "bytes_per_pool": round(s.size / n),
        }
        for s in snapshot.statistics("lineno")[:8]
    ]
    for h in handles:
        h.uninstrument()
    for e in engines:
        e.dispose()
    return {
        "pools": n,
        "bytes_per_pool_after_instrument": round((m1 - m0) / n),
        "bytes_per_pool_after_first_use": round((m2 - m0) / n),
        "bare_control_bytes_per_pool": round(control),
        "top_allocation_sites": top,
    }


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--pools", type=int, help="engines measured (default 200, --quick 50)")
    args = p.parse_args(argv)
    n = args.pools or (50 if args.quick else 200)
    with tempfile.TemporaryDirectory(prefix="poolwatch-mem-") as tmp:
        res = measure(n, f"sqlite:///{os.path.join(tmp, 'm.db')}")
    print(f"memory per instrumented pool ({n} pools, tracemalloc):")
    print(
        f"  after instrument():              {res['bytes_per_pool_after_instrument'] / 1024:.1f} KiB"
    )
    print(
        f"  after first checkout + SELECT 1: {res['bytes_per_pool_after_first_use'] / 1024:.1f} KiB"
    )
    print(f"  bare control (same use, no poolwatch): {res['bare_control_bytes_per_pool']} B")
    print("  top allocation sites (bytes per pool):")
    for t in res["top_allocation_sites"]:
        print(f"    {t['bytes_per_pool']:>7}  {t['where']}")
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
