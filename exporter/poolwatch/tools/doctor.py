"""``poolwatch doctor``: is the pool the problem, and what to change, from a window of history.

For every pool (per job, instance and ``db_client_connection_pool_name``) it runs a fixed set of
PromQL queries over ``--window`` (W), applies its rules and prints each finding with its
evidence (the PromQL and the value it returned), then a ``pool_size``/``max_overflow`` from
:mod:`poolwatch.tools.sizing`. Exit status: 0 healthy, 1 findings, 2 the data could not be read.

The rules and their thresholds are in :mod:`poolwatch.tools.findings`, the queries in
:mod:`poolwatch.tools.history`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from . import findings, history
from .command import add_selector, add_timeout, fail
from .findings import Finding
from .promql import Prometheus, PrometheusError, explain, parse_duration, selector_matchers
from .sizing import Recommendation

__all__ = [
    "PoolReport",
    "add_arguments",
    "diagnose",
    "main",
    "render_text",
    "report_json",
]


@dataclass
class PoolReport:
    job: str
    instance: str
    pool: str
    findings: list[Finding]
    recommended: Recommendation | None
    current: dict[str, str]


def diagnose(prom: Prometheus, selector: str | None, window: float, at: float) -> list[PoolReport]:
    """Every pool the selector matches within the window, diagnosed. Raises PrometheusError when
    the data cannot be read, ValueError for a malformed selector."""
    q = history.Queries(prom, selector, window, at)
    keys = history.pools(q)
    if not keys:
        return []
    data = history.collect(q)
    reports = []
    for key in keys:
        p = findings.Pool(data, key, window)
        found = findings.find(p)
        labels = data.info.get(key, {})
        current = {k: labels[k] for k in ("pool_class", "pool_size", "max_overflow", "timeout")
                   if labels.get(k)}  # fmt: skip
        recommended = findings.recommendation(p)
        reports.append(PoolReport(key[0], key[1], key[2], found, recommended, current))
    return reports


def report_json(reports: list[PoolReport], window: str, selector: str | None) -> dict[str, Any]:
    return {
        "window": window,
        "selector": selector or "",
        "pools": [
            {
                "pool": r.pool,
                "instance": r.instance,
                "job": r.job,
                "current": r.current,
                "findings": [{"kind": f.kind, "evidence": f.evidence()} for f in r.findings],
                "recommended": None if r.recommended is None else {
                    "pool_size": r.recommended.pool_size,
                    "max_overflow": r.recommended.max_overflow,
                    "arithmetic": r.recommended.arithmetic,
                },
            }
            for r in reports
        ],
    }  # fmt: skip


def _fmt(v: float | None) -> str:
    return "no data" if v is None else f"{v:.4g}"


def render_text(reports: list[PoolReport]) -> str:
    lines: list[str] = []
    for r in reports:
        kinds = ", ".join(f.kind for f in r.findings)
        now = ""
        if "pool_size" in r.current:
            now = f" (pool_size {r.current['pool_size']}, max_overflow "
            now += f"{r.current.get('max_overflow', '?')})"
        lines.append(f"{r.pool} on {r.instance} (job {r.job}){now}: {kinds}")
        for f in r.findings:
            if f.kind == "healthy":
                continue
            lines.append(f"  {f.kind}: {f.rule}")
            for m in f.measurements:
                lines.append(f"    {m.name} = {_fmt(m.value)}    {m.promql}")
            if "server" in f.details:
                lines.append(f"    server {f.details['server']}: fleet maxima"
                             f" {f.details['fleet_maxima']:.0f}, limit"
                             f" {f.details['server_limit']:.0f}")  # fmt: skip
                lines.extend(f"    {k}: {q}" for k, q in f.details["fleet_promql"].items())
            for s in f.details.get("summaries", []):
                lines.append(f"    {s['summary']!r}: {s['seconds']:.3g} s in {s['executions']:.0f}"
                             f" executions, mean {s['mean_seconds']:.3g} s")  # fmt: skip
        if r.recommended is not None:
            lines.append(f"  recommended: pool_size {r.recommended.pool_size}, max_overflow"
                         f" {r.recommended.max_overflow}")  # fmt: skip
            lines.extend(f"    {a}" for a in r.recommended.arithmetic)
        else:
            lines.append("  recommended: no checkouts in the window to size from")
        lines.append("")
    return "\n".join(lines).rstrip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus", required=True, metavar="URL", help="the Prometheus to read")
    add_selector(parser)
    parser.add_argument("--window", default="1h", help="how much history to read (default: 1h)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_timeout(parser, 30.0, "query")


def _fail(message: str) -> int:
    return fail("doctor", message)


def main(args: argparse.Namespace, out: Any = None, at: float | None = None) -> int:
    import time

    out = out or sys.stdout
    try:
        window = parse_duration(args.window)
    except ValueError as e:
        return _fail(f"--window: {e}")
    try:
        selector_matchers(args.selector)
    except ValueError as e:
        return _fail(f"--selector: {e}")
    prom = Prometheus(args.prometheus, timeout=args.timeout)
    try:
        reports = diagnose(prom, args.selector, window, time.time() if at is None else at)
    except PrometheusError as e:
        return _fail(explain(e, args.selector))
    if not reports:
        where = f" matching {args.selector}" if args.selector else ""
        return _fail(f"no poolwatch series{where} at {prom.url} in the last {args.window}")
    if args.json:
        print(json.dumps(report_json(reports, args.window, args.selector), indent=2), file=out)
    else:
        print(render_text(reports), file=out)
    return 0 if all(f.kind == "healthy" for r in reports for f in r.findings) else 1
