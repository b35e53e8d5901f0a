"""Scrape cost: `generate_latest(registry)` over 20 instrumented pools x 100 statement summaries.

    python benchmarks/scrape.py [--quick] [--pools 20] [--summaries 100] [--scrapes 30]

Builds the series with real statements: 20 SQLite engines (QueuePool) on one database file with
100 tables, each engine instrumented with poolwatch into one CollectorRegistry and running
`SELECT * FROM t_<k>` for every table (100 distinct `db_query_summary` values per pool). Then
times `prometheus_client.generate_latest(registry)` and poolwatch's own exposition
(`poolwatch.exposition.generate_latest(registry)`, what poolwatch's HTTP exporter serves):
medians over the scrapes, the garbage collector disabled inside each timed scrape and run
between scrapes. The two must carry the same series.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _harness import base_parser, fmt_time, median, pin, resolve_cpu, write_json

BUDGET_MS = 50.0


def build(pools: int, summaries: int, db_path: str) -> tuple[Any, list[Any], list[Any]]:
    from prometheus_client import CollectorRegistry
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import QueuePool

    import poolwatch

    url = f"sqlite:///{db_path}"
    setup = create_engine(url, poolclass=QueuePool)
    with setup.begin() as c:
        for k in range(summaries):
            c.execute(text(f"CREATE TABLE IF NOT EXISTS t_{k} (id INTEGER PRIMARY KEY, v TEXT)"))
    setup.dispose()

    registry = CollectorRegistry()
    engines, handles = [], []
    for i in range(pools):
        engine = create_engine(url, poolclass=QueuePool)
        handles.append(
            poolwatch.instrument(
                engine, name=f"bench-pool-{i:02d}", registry=registry, tracing=False
            )
        )
        with engine.connect() as c:
            for k in range(summaries):
                for _ in range(3):
                    c.execute(text(f"SELECT * FROM t_{k}"))
        engines.append(engine)
    return registry, engines, handles


def _time(fn: Callable[[], Any], n: int) -> list[int]:
    times: list[int] = []
    for _ in range(n):
        gc.collect()
        gc.disable()
        try:
            t = time.perf_counter_ns()
            fn()
            times.append(time.perf_counter_ns() - t)
        finally:
            gc.enable()
    return times


def _samples(body: bytes) -> list[str]:
    return sorted(line for line in body.decode().splitlines() if line and not line.startswith("#"))


def _without_created(lines: list[str]) -> list[str]:
    return [line for line in lines if "_created" not in line.split("{", 1)[0].split(" ", 1)[0]]


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--pools", type=int, default=20)
    p.add_argument("--summaries", type=int, default=100)
    p.add_argument("--scrapes", type=int, help="timed scrapes (default 30, --quick 5)")
    p.add_argument("--cpu", type=int, default=-2, help="pin to this core (-1: do not)")
    args = p.parse_args(argv)
    pin(resolve_cpu(args.cpu))
    scrapes = args.scrapes or (5 if args.quick else 30)
    from prometheus_client import generate_latest

    try:  # poolwatch's own /metrics exposition (what its HTTP exporter serves)
        from poolwatch.exposition import generate_latest as pw_generate_latest
    except ImportError:
        pw_generate_latest = None

    with tempfile.TemporaryDirectory(prefix="poolwatch-scrape-") as tmp:
        t0 = time.perf_counter()
        registry, engines, handles = build(args.pools, args.summaries, os.path.join(tmp, "s.db"))
        build_s = time.perf_counter() - t0

        body = generate_latest(registry)  # warm-up, and the exposition we describe
        times = _time(lambda: generate_latest(registry), scrapes)
        pw_times: list[int] = []
        same_series: bool | None = None
        if pw_generate_latest is not None:
            pw_body = pw_generate_latest(registry)
            pw_times = _time(lambda: pw_generate_latest(registry), scrapes)
            # The two expositions must carry the same series (_created timestamps aside).
            a, b = _without_created(_samples(body)), _without_created(_samples(pw_body))
            same_series = [x.rsplit(" ", 1)[0] for x in a] == [x.rsplit(" ", 1)[0] for x in b]

        # Where the time goes: the registry's collect() alone (metric families and samples
        # built by the collectors) versus generate_latest (collect + text formatting).
        collect_times = _time(lambda: list(registry.collect()), max(3, scrapes // 3))
        families = list(registry.collect())
        by_family = sorted(((len(f.samples), f.name) for f in families), reverse=True)
        del families

        text_body = body.decode()
        samples = sum(1 for line in text_body.splitlines() if line and not line.startswith("#"))
        per_pool: dict[str, set[str]] = {}
        for m in re.finditer(
            r"^db_client_operation_duration_seconds_count\{([^}]*)\}", text_body, re.M
        ):
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
            per_pool.setdefault(labels.get("db_client_connection_pool_name", "?"), set()).add(
                labels.get("db_query_summary", "?")
            )
        summaries_seen = sorted(len(v) for v in per_pool.values())
        for h in handles:
            h.uninstrument()
        for e in engines:
            e.dispose()

    med = median(times)
    result = {
        "pools": args.pools,
        "summaries_per_pool": args.summaries,
        "scrapes": scrapes,
        "median_ns": med,
        "min_ns": min(times),
        "max_ns": max(times),
        "poolwatch_exposition": None
        if not pw_times
        else {
            "median_ns": median(pw_times),
            "min_ns": min(pw_times),
            "max_ns": max(pw_times),
            "same_series_as_prometheus_client": same_series,
        },
        "exposition_bytes": len(body),
        "samples": samples,
        "pools_seen": len(per_pool),
        "summaries_per_pool_seen": [summaries_seen[0], summaries_seen[-1]]
        if summaries_seen
        else [],
        "build_s": round(build_s, 2),
        "budget_ms": BUDGET_MS,
        "collect_only_median_ns": median(collect_times),
        "samples_by_family": {name: n for n, name in by_family},
    }
    print(
        f"scrape: {args.pools} pools x {args.summaries} summaries -> {samples} samples, "
        f"{len(body) / 1024:.0f} KiB; built in {build_s:.1f} s"
    )
    print(
        f"  prometheus_client.generate_latest: median {fmt_time(med)} (min "
        f"{fmt_time(min(times))}, max {fmt_time(max(times))}) over {scrapes} scrapes; "
        f"budget {BUDGET_MS:.0f} ms"
    )
    if pw_times:
        print(
            f"  poolwatch.exposition.generate_latest (its /metrics): median "
            f"{fmt_time(median(pw_times))} (min {fmt_time(min(pw_times))}, max "
            f"{fmt_time(max(pw_times))}); same series as prometheus_client: {same_series}"
        )
    cm = median(collect_times)
    print(
        f"  registry.collect() alone: {fmt_time(cm)}; so prometheus_client's text formatting: "
        f"{fmt_time(med - cm)}; {med / max(samples, 1):.0f} ns/sample"
    )
    print("  samples by family: " + ", ".join(f"{name}={n}" for n, name in by_family[:4]))
    print(
        f"  pools in exposition: {len(per_pool)}; distinct db_query_summary per pool: "
        f"{summaries_seen[0] if summaries_seen else 0}-"
        f"{summaries_seen[-1] if summaries_seen else 0}"
    )
    write_json(args.json, result)
    if len(per_pool) != args.pools:
        print(
            f"ERROR: expected {args.pools} pools in the exposition, saw {len(per_pool)}",
            file=sys.stderr,
        )
        return 1
    if same_series is False:
        print("ERROR: poolwatch's exposition and prometheus_client's differ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
