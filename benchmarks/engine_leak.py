"""Instrument, use and dispose 1,000 engines: none may stay alive.

    python benchmarks/engine_leak.py [--engines 1000]

For each variant, 1,000 times: create a SQLite engine (QueuePool), `poolwatch.instrument()` it
(unique name, one shared CollectorRegistry), run `SELECT 1`, `engine.dispose()`, keep only weak
references to the engine and its pools, drop the engine. No `uninstrument()`: an application
that throws an engine away must not leak it. Then `gc.collect()` and count what is still alive.

Variants: ``default`` (metrics only) and ``all`` (tracing on with an SDK TracerProvider,
leak_threshold=1.0); ``bare`` (no poolwatch) is the control for the memory figure. Also reported
(information only): how many of the dropped pools still have series in the registry, and the
memory still held per dropped engine (tracemalloc).

The garbage collector runs on its own schedule, as in an application: poolwatch's clean-up of a
dropped engine may therefore run inside any allocation, including inside prometheus_client.
A watchdog (--timeout) turns a hang into a traceback on stderr and exit status 3.

Exit status 1 if any engine or pool survives, in every mode (this is a correctness check).
"""

from __future__ import annotations

import faulthandler
import gc
import os
import re
import sys
import tempfile
import threading
import tracemalloc
import weakref
from typing import Any

from _harness import base_parser, write_json


def run_variant(variant: str, n: int, url: str) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry, generate_latest
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import QueuePool

    import poolwatch

    kw: dict[str, Any] = {"tracing": False}
    instrument = poolwatch.instrument
    if variant == "bare":

        def instrument(engine: Any, **kw: Any) -> None:  # type: ignore[misc]
            return None
    elif variant == "all":
        from _workloads import counting_tracer_provider

        provider, _ = counting_tracer_provider()
        kw = {"tracing": True, "tracer_provider": provider, "leak_threshold": 1.0}
    registry = CollectorRegistry()
    engine_refs: list[weakref.ref[Any]] = []
    pool_refs: list[weakref.ref[Any]] = []
    gc.collect()
    tracemalloc.start()
    m0 = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        engine = create_engine(url, poolclass=QueuePool)
        instrument(engine, name=f"leak-{variant}-{i}", registry=registry, **kw)
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        pool_refs.append(weakref.ref(engine.pool))
        engine.dispose()
        pool_refs.append(weakref.ref(engine.pool))  # dispose() made a new pool
        engine_refs.append(weakref.ref(engine))
        del engine, c
    for _ in range(3):
        gc.collect()
    alive_engines = sum(r() is not None for r in engine_refs)
    alive_pools = sum(r() is not None for r in pool_refs)
    # Series of dropped pools may be removed at the next safe point, e.g. during a scrape
    # (poolwatch defers that work out of the garbage collector): count after two scrapes.
    named: list[int] = []
    for _ in range(2):
        body = generate_latest(registry).decode()
        named.append(
            len(set(re.findall(rf'db_client_connection_pool_name="(leak-{variant}-\d+)"', body)))
        )
    del body
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - m0  # after the scrapes: deferred work done
    tracemalloc.stop()
    return {
        "engines": n,
        "alive_engines": alive_engines,
        "alive_pools": alive_pools,
        "pools_still_exported": named[-1],
        "pools_exported_at_first_scrape": named[0],
        "bytes_held_per_engine": round(held / n),
    }


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--engines", type=int, default=1000)
    p.add_argument("--variants", default="default,all,bare")
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds before the watchdog dumps every thread's stack and exits 3",
    )
    args = p.parse_args(argv)
    faulthandler.dump_traceback_later(args.timeout, exit=False)

    def hung() -> None:
        print(
            f"HANG: the engine leak check did not finish in {args.timeout:.0f} s "
            "(stacks on stderr)",
            flush=True,
        )
        os._exit(3)

    watchdog = threading.Timer(args.timeout + 1, hung)
    watchdog.daemon = True
    watchdog.start()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="poolwatch-leak-") as tmp:
        url = f"sqlite:///{os.path.join(tmp, 'l.db')}"
        for v in args.variants.split(","):
            results[v] = r = run_variant(v, args.engines, url)
            print(
                f"engine leak check [{v}]: {r['engines']} engines instrumented and disposed -> "
                f"{r['alive_engines']} engines, {r['alive_pools']} pools alive; "
                f"{r['pools_exported_at_first_scrape']}/{r['pools_still_exported']} dropped pools "
                "still exported at the first/second scrape; "
                f"{r['bytes_held_per_engine']} B held per dropped engine",
                flush=True,
            )
    write_json(args.json, results)
    survivors = sum(r["alive_engines"] + r["alive_pools"] for r in results.values())
    if survivors:
        print(f"FAIL: {survivors} engines/pools survived", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
