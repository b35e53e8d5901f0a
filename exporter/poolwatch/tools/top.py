"""``poolwatch top``: every pool of one or many instances, one row per pool and instance, sorted
by saturation.

Rows come from two reads of the same targets: gauges from the latest, rates and percentiles from
the difference between the two (bucket deltas, as ``rate()`` would). Endpoints are read every
``--interval``; with ``--prometheus`` the two reads are instant queries ``--window`` apart, since
Prometheus holds one sample per scrape interval. :func:`pool_rows`, :func:`render_table` and
:func:`render_plain` are the pieces another live view reuses: inside an application (the
demo), ``pool_rows([registry_read(registry)], [previous])`` with
:func:`poolwatch.tools.scrape.registry_read`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from . import names as n
from .promql import Prometheus, PrometheusError, explain, parse_duration, selector_matchers
from .scrape import Read, Sample, bucket_quantile, fetch_all

__all__ = [
    "PoolRow",
    "StatementShare",
    "add_arguments",
    "main",
    "pool_rows",
    "prometheus_read",
    "render_plain",
    "render_table",
    "rows_json",
]

TOP_STATEMENTS = 3  # summaries shown per pool
WAIT_QUANTILE = 0.95
HOLD_QUANTILE = 0.95
_KEY_LABELS = (n.JOB, n.INSTANCE, n.POOL)


@dataclass(frozen=True)
class StatementShare:
    summary: str
    share: float  # of the pool's statement time between the two reads
    seconds: float


@dataclass(frozen=True)
class PoolRow:
    """One pool on one instance. Rates and percentiles are None without a previous read (or
    without observations between the two); ``error`` marks a target that could not be read."""

    instance: str
    pool: str
    job: str = ""
    used: float = 0.0
    idle: float = 0.0
    max: float | None = None  # None: unbounded (NullPool)
    waiting: float = 0.0
    longest_wait: float | None = None
    wait_p95: float | None = None
    timeouts_per_min: float | None = None
    hold_p95: float | None = None
    created_per_s: float | None = None
    leaked: float | None = None  # None: not exported
    leaks: float | None = None  # seen between the two reads
    statements: tuple[StatementShare, ...] = ()
    window: float | None = None  # seconds between the two reads
    error: str | None = None

    @property
    def saturation(self) -> float | None:
        if self.max is None or self.max <= 0:
            return None
        return self.used / self.max


def _key(labels: Mapping[str, str], instance: str) -> tuple[str, str, str]:
    return labels.get(n.JOB, ""), labels.get(n.INSTANCE, instance), labels[n.POOL]


def _series_id(s: Sample) -> tuple[str, frozenset[tuple[str, str]]]:
    return s.name, frozenset(s.labels.items())


class _Pool:
    """The samples of one pool in one read, with the previous read's for deltas."""

    def __init__(self, now: list[Sample], before: list[Sample] | None) -> None:
        self.now = now
        self.before = {_series_id(s): s.value for s in before} if before is not None else None

    def value(self, name: str, **match: str) -> float | None:
        found = [s.value for s in self.now if s.name == name and _matches(s, match)]
        return sum(found) if found else None

    def deltas(self, name: str, **match: str) -> list[tuple[Sample, float]] | None:
        if self.before is None:
            return None
        out = []
        for s in self.now:
            if s.name == name and _matches(s, match):
                prev = self.before.get(_series_id(s), 0.0)
                out.append((s, s.value - prev if s.value >= prev else s.value))  # reset: restart
        return out

    def delta(self, name: str, **match: str) -> float | None:
        d = self.deltas(name, **match)
        return None if d is None or not d else sum(v for _, v in d)

    def quantile(self, q: float, histogram: str) -> float | None:
        d = self.deltas(histogram + "_bucket")
        if not d:
            return None
        buckets: dict[float, float] = {}
        for s, v in d:
            le = float(s.labels[n.LE])
            buckets[le] = buckets.get(le, 0.0) + v
        return bucket_quantile(q, buckets)

    def statements(self) -> tuple[StatementShare, ...]:
        d = self.deltas(n.OPERATION_DURATION + "_sum")
        if not d:
            return ()
        by_summary: dict[str, float] = {}
        for s, v in d:
            summary = s.labels.get(n.QUERY_SUMMARY, "")
            by_summary[summary] = by_summary.get(summary, 0.0) + v
        total = sum(by_summary.values())
        if total <= 0:
            return ()
        top = sorted(by_summary.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_STATEMENTS]
        return tuple(StatementShare(k, v / total, v) for k, v in top if v > 0)


def _matches(s: Sample, match: Mapping[str, str]) -> bool:
    return all(s.labels.get(k) == v for k, v in match.items())


def _group(read: Read) -> dict[tuple[str, str, str], list[Sample]]:
    out: dict[tuple[str, str, str], list[Sample]] = {}
    for s in read.samples:
        if n.POOL in s.labels:
            out.setdefault(_key(s.labels, read.instance), []).append(s)
    return out


def pool_rows(current: Sequence[Read], previous: Sequence[Read] = ()) -> list[PoolRow]:
    """Rows for every pool in ``current`` (deltas against ``previous``, matched by target),
    unreadable targets first, then by saturation (highest first), waiting callers, name."""
    before_by_target = {r.target: r for r in previous if r.error is None}
    rows: list[PoolRow] = []
    for read in current:
        if read.error is not None:
            rows.append(PoolRow(instance=read.instance, pool="", error=read.error))
            continue
        prev = before_by_target.get(read.target)
        prev_groups = _group(prev) if prev is not None else {}
        window = read.at - prev.at if prev is not None else None
        for key, samples in _group(read).items():
            before = prev_groups.get(key)
            rows.append(_row(key, _Pool(samples, before), window if before is not None else None))
    rows.sort(key=_order)
    return rows


def _order(r: PoolRow) -> tuple[int, float, float, str, str]:
    return (0 if r.error else 1, -(r.saturation or 0.0), -r.waiting, r.instance, r.pool)


def _per(value: float | None, window: float | None, unit: float) -> float | None:
    if value is None or not window:
        return None
    return value / window * unit


def _row(key: tuple[str, str, str], p: _Pool, window: float | None) -> PoolRow:
    job, instance, pool = key
    leaked = p.value(n.CONNECTION_LEAKED)
    return PoolRow(
        instance=instance,
        pool=pool,
        job=job,
        used=p.value(n.COUNT, **{n.STATE: n.USED}) or 0.0,
        idle=p.value(n.COUNT, **{n.STATE: n.IDLE}) or 0.0,
        max=p.value(n.MAX),
        waiting=p.value(n.PENDING) or 0.0,
        longest_wait=p.value(n.WAIT_LONGEST),
        wait_p95=p.quantile(WAIT_QUANTILE, n.WAIT_TIME),
        timeouts_per_min=_per(p.delta(n.CONNECTION_TIMEOUTS), window, 60.0),
        hold_p95=p.quantile(HOLD_QUANTILE, n.USE_TIME),
        created_per_s=_per(p.delta(n.CREATE_TIME + "_count"), window, 1.0),
        leaked=leaked,
        leaks=p.delta(n.CONNECTION_LEAKS) if leaked is not None else None,
        statements=p.statements(),
        window=window,
    )


def rows_json(rows: Iterable[PoolRow]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        d = asdict(r)
        d["saturation"] = r.saturation
        d["statements"] = [asdict(s) for s in r.statements]
        out.append(d)
    return out


# --- rendering -------------------------------------------------------------------------------

COLUMNS = ("instance", "pool", "used/idle/max", "sat", "waiting", "longest", "wait p95",
           "timeouts/min", "hold p95", "created/s", "leaked",
           "top statements (share of time)")  # fmt: skip


def _secs(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _num(v: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def bar(r: PoolRow, width: int = 10) -> str:
    """``[###--     ]``: used ``#`` and idle ``-`` against the maximum."""
    cap = r.max if r.max else max(r.used + r.idle, 1.0)
    used = min(width, round(width * r.used / cap))
    idle = min(width - used, round(width * r.idle / cap))
    return "[" + "#" * used + "-" * idle + " " * (width - used - idle) + "]"


def _cells(r: PoolRow) -> list[str]:
    if r.error is not None:
        return [r.instance, "", f"unreachable: {r.error}", *[""] * (len(COLUMNS) - 3)]
    cmax = "∞" if r.max is None else f"{r.max:.0f}"
    leaked = _num(r.leaked)
    statements = ", ".join(f"{s.summary} {s.share:.0%}" for s in r.statements) or "-"
    return [
        r.instance,
        r.pool,
        f"{bar(r)} {r.used:.0f}/{r.idle:.0f}/{cmax}",
        "-" if r.saturation is None else f"{r.saturation:.0%}",
        f"{r.waiting:.0f}",
        _secs(r.longest_wait),
        _secs(r.wait_p95),
        _num(r.timeouts_per_min, "{:.1f}"),
        _secs(r.hold_p95),
        _num(r.created_per_s, "{:.2f}"),
        leaked,
        statements,
    ]


def render_plain(rows: Sequence[PoolRow]) -> str:
    """A plain fixed-width table (``--once``, logs, runbooks)."""
    table = [list(COLUMNS), *(_cells(r) for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in table]  # fmt: skip
    if not rows:
        lines.append("(no pools)")
    return "\n".join(lines)


def render_table(rows: Sequence[PoolRow], title: str = "poolwatch top") -> Any:
    """A rich ``Table`` of the rows, for a live view."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, expand=False)
    for col in COLUMNS[:-1]:  # the numbers never wrap; on a narrow terminal the names shrink
        table.add_column(col, no_wrap=True, min_width=len(col) if col != "instance" else 8)
    table.add_column(COLUMNS[-1], overflow="fold")
    for r in rows:
        cells = _cells(r)
        if r.error is not None:  # the reason goes where text may wrap
            table.add_row(cells[0], Text("unreachable", style="bold red"), *[""] * 9,
                          Text(r.error, style="red"))
            continue
        sat = r.saturation or 0.0
        style = "red" if sat >= 1 and r.waiting else "yellow" if sat >= 0.8 else "green"
        table.add_row(
            cells[0], Text(cells[1], style="bold"), Text(cells[2], style=style),
            Text(cells[3], style=style), Text(cells[4], style="red" if r.waiting else ""),
            *cells[5:7], Text(cells[7], style="red" if r.timeouts_per_min else ""),
            *cells[8:10], Text(cells[10], style="red" if r.leaked else ""), cells[11],
        )  # fmt: skip
    return table


# --- reading ---------------------------------------------------------------------------------

# Everything top shows, by sample name (statement buckets are left out: only their sums are used).
_TOP_SERIES = (
    "db_client_connection_.+|db_client_operation_duration_seconds_sum|poolwatch_.+"
)


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
    parser.add_argument("--selector",
                        help="with --prometheus: label matchers, e.g. '{job=\"api\"}'")  # fmt: skip
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds between reads (default: 2)")  # fmt: skip
    parser.add_argument("--window", default="1m",
                        help="with --prometheus: rates over this window (default: 1m)")  # fmt: skip
    parser.add_argument("--once", action="store_true",
                        help="print one snapshot as a plain table and exit (two reads "
                        "--interval apart)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="with --once: the snapshot as JSON")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds to wait for each target (default: 5)")  # fmt: skip


def _fail(message: str) -> int:
    print(f"poolwatch top: {message}", file=sys.stderr)
    return 2


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
                return _fail(f"no poolwatch series at {prom.url}"
                             + (f" matching {args.selector}" if args.selector else ""))
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
                before, current = [], [Read("prometheus", "prometheus", time.time(),
                                            error=str(e))]
            stamp = time.strftime("%H:%M:%S")
            live.update(render_table(pool_rows(current, before),
                                     title=f"poolwatch top — {stamp}"))  # fmt: skip
            previous = current
            time.sleep(interval)
