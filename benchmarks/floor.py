"""The floor: what the cheapest possible instrumentation costs on this machine.

    python benchmarks/floor.py [--quick]

Part 1, micro-timings (timeit, GC off, median of repeats, the empty loop subtracted):
  a time.perf_counter() pair, a time.perf_counter_ns() pair, Histogram.observe on a label child
  resolved beforehand, poolwatch's own HistogramChild.observe, Gauge.inc (no labels),
  Counter.inc on a resolved child, an OpenTelemetry SDK span started and ended (4 attributes, a
  no-op span processor), and poolwatch's three hot-path wrappers (poolwatch.core.hotpath, compiled
  and interpreted) around no-op stand-ins for the pool and the dialect: one checkout, statement
  and checkin, less the same three calls without poolwatch.
Part 2, the seam: `SELECT 1` on SQLite (the select1_sqlite workload), interleaved in warm worker
  processes, bare vs a no-op before/after_cursor_execute listener vs a no-op DialectEvents
  do_execute listener vs a pass-through wrapper on the dialect instance's do_execute (the seam
  poolwatch uses). Attaching any cursor listener moves SQLAlchemy onto a slower execution
  path before the listener does anything; this is why poolwatch times statements at the dialect's
  do_execute instead.
"""

from __future__ import annotations

import sys
import timeit
from typing import Any

from _harness import (
    base_parser,
    fmt_time,
    median,
    pin,
    resolve_cpu,
    run_interleaved,
    write_json,
)

SETUP = """
import time
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
_r = CollectorRegistry()
pc, pcn = time.perf_counter, time.perf_counter_ns
h = Histogram("h_seconds", "h", ["pool", "summary"], registry=_r,
              buckets=[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10]).labels("p", "SELECT t")
g = Gauge("g", "g", registry=_r)
c = Counter("c", "c", ["pool"], registry=_r).labels("p")
observe, inc, cinc = h.observe, g.inc, c.inc
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
_tp = TracerProvider()
_tp.add_span_processor(SpanProcessor())
tracer = _tp.get_tracer("floor")
try:  # poolwatch's own histogram (poolwatch.backends.prometheus.histogram), if this version has one
    from poolwatch.backends.prometheus.histogram import Histogram as PwHistogram
    pw_observe = PwHistogram("pw_seconds", "h", ["pool", "summary"],
                             [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10]).labels("p", "S").observe
except ImportError:
    pw_observe = None
# poolwatch's three hot-path wrappers around no-op stand-ins for the pool and the dialect: one
# checkout, one statement, one checkin, with each build of poolwatch.core.hotpath.
import itertools, types
from collections import deque
def _noop4(cursor, statement, parameters, context):
    return None
_record = object()
_connect = itertools.repeat(types.SimpleNamespace(_connection_record=_record)).__next__
_return = deque(maxlen=1).append
def bare_path():
    _connect(); _noop4(None, "SELECT 1", (), None); _return(_record)
def _pw_path(m):
    # Recorders as poolwatch's histograms give them: compiled, a Buckets counter that never
    # defers; interpreted, a deque drained past 128 values.
    from poolwatch.core.state import PoolState
    inst = types.SimpleNamespace(state=PoolState("p"), leaks=None, on_wait=None)
    q = deque()
    if m.COMPILED:
        rec, pending = m.Buckets([0.001, 0.01, 0.1, 1.0, 10.0]).record, None
    else:
        rec, pending = q.append, q.__len__
    sw = m.Switch()
    sw.on = True
    co = m.checkout_wrapper(_connect, sw, inst, rec, pending, q.clear, 128, TimeoutError)
    ci = m.checkin_wrapper(_return, sw, inst, rec)
    series = m.Series("SELECT", "SELECT", rec, pending, q.clear)
    ex = m.execute_wrapper(_noop4, sw, inst, {"SELECT 1": series}, None, None, None, 128,
                           no_params=False)
    def path():
        co(); ex(None, "SELECT 1", (), None); ci(_record)
    return path
try:
    from poolwatch.core import hotpath as _interpreted, build as _wrappers
    pw_path_py = _pw_path(_interpreted)
    _compiled = _wrappers.compiled_build()
    pw_path_c = _pw_path(_compiled) if _compiled is not None else None
except ImportError:  # a poolwatch without poolwatch.core.hotpath
    pw_path_py = pw_path_c = None
attrs = {"db.system.name": "sqlite", "db.operation.name": "SELECT", "db.query.summary": "SELECT t",
         "db.client.connection.pool.name": "p"}
"""

SEAMS = ("noop_cursor", "noop_do_execute", "noop_dialect_wrap")
MICRO = {
    "perf_counter() pair": "a = pc(); b = pc()",
    "perf_counter_ns() pair": "a = pcn(); b = pcn()",
    "Histogram.observe (resolved child, 9 buckets)": "observe(0.003)",
    "Gauge.inc (no labels)": "inc()",
    "Counter.inc (resolved child)": "cinc()",
    "poolwatch HistogramChild.observe (9 buckets)": "pw_observe(0.003)",
    "OTel SDK span start+end (4 attributes, no exporter)": "tracer.start_span('SELECT t', attributes=attrs).end()",
    "poolwatch wrappers, compiled: checkout+statement+checkin": "pw_path_c()",
    "poolwatch wrappers, interpreted: checkout+statement+checkin": "pw_path_py()",
}
# Measured against the same three calls without poolwatch, not against the empty loop.
AGAINST_BARE_PATH = ("pw_path_c()", "pw_path_py()")


def micro(number: int, repeat: int) -> dict[str, float]:
    def per_op(stmt: str) -> float:
        # timeit turns the garbage collector off while timing.
        times = timeit.repeat(stmt, SETUP, number=number, repeat=repeat)
        return median([t / number * 1e9 for t in times])

    empty = per_op("pass")
    out = {"empty loop": empty}
    bare_path = per_op("bare_path()")
    for name, stmt in MICRO.items():
        try:
            out[name] = max(per_op(stmt) - (bare_path if stmt in AGAINST_BARE_PATH else empty), 0.0)
        except TypeError:  # None: this poolwatch lacks it (its own histogram, a compiled build)
            continue
    return out


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--cpu", type=int, default=-2, help="pin to this core (-1: do not)")
    args = p.parse_args(argv)
    cpu = resolve_cpu(args.cpu)
    pin(cpu)
    number, repeat = (20_000, 3) if args.quick else (1_000_000, 7)
    m = micro(number, repeat)
    print("floor, micro-timings (ns per call, empty loop subtracted):")
    for name, ns in m.items():
        print(f"  {name:<48}{ns:>8.0f} ns")

    counts = (
        {"rounds": 2, "n": 100, "warmup": 50}
        if args.quick
        else {"rounds": 30, "n": 2_000, "warmup": 3_000}
    )
    seam = run_interleaved("select1_sqlite", ["bare", *SEAMS], cpu=cpu, **counts)
    print(seam.report())
    bare = seam.configs["bare"].median_ns
    added: dict[str, Any] = {}
    for c in SEAMS:
        rounds = [
            x - y
            for x, y in zip(seam.configs[c].ns_per_op, seam.configs["bare"].ns_per_op, strict=True)
        ]
        added[c] = median(rounds)
        print(
            f"  {c}: adds {fmt_time(added[c])} per SELECT 1 "
            f"({seam.ratio(c):.3f}x of bare {fmt_time(bare)})"
        )
    write_json(args.json, {"micro_ns": m, "seam": seam.to_json(), "seam_added_ns": added})
    return 0


if __name__ == "__main__":
    sys.exit(main())
