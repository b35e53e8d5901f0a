"""``poolwatch top``: every pool of one or many instances, one row per pool and instance, sorted
by saturation.

Endpoints are read every ``--interval``; with ``--prometheus`` the two reads a row needs
(:mod:`poolwatch.tools.rows`) are instant queries ``--window`` apart, since Prometheus holds one
sample per scrape interval. The table is drawn by :mod:`poolwatch.tools.table`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import names as n
from .command import add_selector, add_timeout, fail
from .promql import Prometheus, PrometheusError, explain, parse_duration, selector_matchers
from .rows import pool_rows, rows_json
from .scrape import Read, Sample, fetch_all
from .table import render_plain, render_table

__all__ = ["add_arguments", "main", "prometheus_read"]


# Everything top shows, by sample name (statement buckets are left out: only their sums are used).
_TOP_SERIES = "db_client_connection_.+|db_client_operation_duration_seconds_sum|poolwatch_.+"


def prometheus_read(prom: Prometheus, selector: str | None, at: float) -> list[Read]:
    """The pools' series as Prometheus had them at ``at``, as one read, plus one unreadable row
    per target whose last scrape failed (``up == 0``)."""
    inner = selector_matchers(selector)
    extra = f", {inner}" if inner else ""
    series = prom.query(f'{{__name__=~"{_TOP_SERIES}"{extra}}}', at)
    samples = tuple(
        Sample(s.labels["__name__"], {k: v for k, v in s.labels.items() if k != "__name__"},
               s.value)
        for s in series
    )  # fmt: skip
    reads = [Read(prom.url, prom.url, at, samples)]
    down = prom.query(f"up{{{inner}}} == 0", at)
    for s in down:
        instance = s.labels.get(n.INSTANCE, "?")
        reads.append(Read(f"up:{instance}", instance, at, error="last scrape failed (up == 0)"))
    return reads


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="*", metavar="URL",
                        help="/metrics endpoints (host:port or a URL)")  # fmt: skip
    parser.add_argument("--prometheus", metavar="URL", help="read from this Prometheus instead")
    add_selector(parser, "with --prometheus: ")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds between reads (default: 2)")  # fmt: skip
    parser.add_argument("--window", default="1m",
                        help="with --prometheus: rates over this window (default: 1m)")  # fmt: skip
    parser.add_argument("--once", action="store_true",
                        help="print one snapshot as a plain table and exit (two reads "
                        "--interval apart)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="with --once: the snapshot as JSON")
    add_timeout(parser, 5.0, "target")


def _fail(message: str) -> int:
    return fail("top", message)


def main(args: argparse.Namespace, out: Any = None) -> int:
    try:
        return _main(args, out or sys.stdout)
    except KeyboardInterrupt:  # Ctrl-C is how the live view ends
        return 0


def _main(args: argparse.Namespace, out: Any) -> int:
    if bool(args.urls) == bool(args.prometheus):
        return _fail("give /metrics URLs or --prometheus URL (one of them)")
    if args.json and not args.once:
        return _fail("--json needs --once")
    if args.interval <= 0:
        return _fail("--interval accepts seconds > 0")
    if args.selector and not args.prometheus:
        return _fail("--selector needs --prometheus")
    try:
        window = parse_duration(args.window)
        selector_matchers(args.selector)
    except ValueError as e:
        return _fail(str(e))

    prom = Prometheus(args.prometheus, timeout=args.timeout) if args.prometheus else None

    def read(previous: Sequence[Read]) -> tuple[list[Read], list[Read]]:
        if prom is not None:
            now = time.time()
            before = prometheus_read(prom, args.selector, now - window)
            return before, prometheus_read(prom, args.selector, now)
        current = fetch_all(args.urls, args.timeout)
        return list(previous), current

    try:
        if args.once:
            previous: list[Read] = []
            if prom is None:
                previous = fetch_all(args.urls, args.timeout)
                time.sleep(args.interval)
            before, current = read(previous)
            rows = pool_rows(current, before)
            if prom is None and all(r.error for r in current):
                print(render_plain(rows), file=out)
                return _fail("no target could be read")
            if prom is not None and not any(r.error is None and r.samples for r in current):
                return _fail(
                    f"no poolwatch series at {prom.url}"
                    + (f" matching {args.selector}" if args.selector else "")
                )
            if args.json:
                print(json.dumps({"pools": rows_json(rows)}, indent=2), file=out)
            else:
                print(render_plain(rows), file=out)
            return 0
        if prom is not None:  # a bad selector or an unreachable Prometheus fails here, not live
            prometheus_read(prom, args.selector, time.time())
        return _live(read, args.interval, out)
    except PrometheusError as e:
        return _fail(explain(e, args.selector))


def _live(read: Callable[[Sequence[Read]], tuple[list[Read], list[Read]]], interval: float,
          out: Any) -> int:  # fmt: skip
    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError:
        return _fail("the live view needs rich: pip install 'poolwatch[demo]' (or use --once)")
    previous: list[Read] = []
    console = Console(file=out)
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while True:
            try:
                before, current = read(previous)
            except PrometheusError as e:  # shown in the view; the next refresh retries
                before, current = [], [Read("prometheus", "prometheus", time.time(), error=str(e))]
            stamp = time.strftime("%H:%M:%S")
            live.update(render_table(pool_rows(current, before),
                                     title=f"poolwatch top — {stamp}"))  # fmt: skip
            previous = current
            time.sleep(interval)
