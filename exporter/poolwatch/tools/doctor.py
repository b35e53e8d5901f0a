"""``poolwatch doctor``: is the pool the problem, and what to change, from a window of history.

For every pool (per job, instance and ``db_client_connection_pool_name``) it runs a fixed set of
PromQL queries over ``--window`` (W), applies the rules below and prints each finding with its
evidence (the PromQL and the value it returned), then a ``pool_size``/``max_overflow`` from
:mod:`poolwatch.tools.sizing`. Exit status: 0 healthy, 1 findings, 2 the data could not be read.

The rules (thresholds are the constants below):

- ``undersized``: the pool is bounded, its used connections reached the maximum within W, callers
  waited (wait p95 or mean wait >= UNDERSIZED_WAIT, or a checkout timed out; the mean catches
  the starved callers of a pool that hands connections back to the same threads), and the
  statements are fast (``slow_queries`` does not hold: slow statements are fixed in the
  statements, not in the pool).
- ``oversized``: the pool never used more than OVERSIZED_USE_SHARE of its maximum within W, and it
  costs the server: the fleet's maxima on its server reach SERVER_PRESSURE_SHARE of the server's
  limit, or it kept at least OVERSIZED_IDLE_CONNECTIONS connections idle for the whole window.
- ``held_outside_queries``: statements took at most HELD_STATEMENT_SHARE of the time connections
  were held, and a hold lasted HELD_MIN_SECONDS or more on average (needs statement metrics).
- ``slow_queries``: summaries whose mean duration is SLOW_QUERY_SECONDS or more, at most
  SLOW_QUERY_TOP of them (the biggest by time), took SLOW_QUERY_HELD_SHARE or more of the held time.
- ``leak``: a connection was held past the pool's ``leak_threshold`` within W (the leaked gauge
  reached 1, or the leak counter increased).
- ``churn``: connections opened to replace closed ones (opened minus the growth of open
  connections) reached CHURN_RATIO per checkout and CHURN_MIN_PER_MINUTE.
- ``server_full``: the server refused connections as full
  (``poolwatch_connection_errors_total{error_type="too_many_connections"}`` increased).
- ``budget_exceeded``: the maxima of every pool on the pool's server (all jobs, not only the
  selector's) exceed the server's limit (``poolwatch_server_connections_max``).
- ``healthy``: none of the above.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import names as n
from .promql import (
    Prometheus,
    PrometheusError,
    Series,
    explain,
    format_duration,
    parse_duration,
    selector_matchers,
)
from .sizing import HOLD_PERCENTILE, Demand, Recommendation, recommend

__all__ = [
    "CHURN_MIN_PER_MINUTE",
    "CHURN_RATIO",
    "HELD_MIN_SECONDS",
    "HELD_STATEMENT_SHARE",
    "KINDS",
    "OVERSIZED_IDLE_CONNECTIONS",
    "OVERSIZED_USE_SHARE",
    "PEAK_RATE_DIVISOR",
    "PEAK_RATE_MAX",
    "SERVER_PRESSURE_SHARE",
    "SLOW_QUERY_HELD_SHARE",
    "SLOW_QUERY_SECONDS",
    "SLOW_QUERY_TOP",
    "UNDERSIZED_WAIT",
    "Finding",
    "PoolReport",
    "add_arguments",
    "diagnose",
    "main",
    "render_text",
    "report_json",
]

UNDERSIZED_WAIT = 0.05  # seconds: the wait p95 or mean that counts as callers waiting
OVERSIZED_USE_SHARE = 0.5  # "never uses most of its maximum"
OVERSIZED_IDLE_CONNECTIONS = 10  # idle the whole window: server slots and memory for nothing
SERVER_PRESSURE_SHARE = 0.8  # fleet maxima / server limit at which the server counts as pressed
HELD_STATEMENT_SHARE = 0.25  # statements' share of the held time below which holding is the cost
HELD_MIN_SECONDS = 0.05  # mean hold below which the gap is interpreter overhead, not work
SLOW_QUERY_SECONDS = 0.1  # mean duration of a slow summary
SLOW_QUERY_TOP = 3  # "a few summaries"
SLOW_QUERY_HELD_SHARE = 0.5  # "most of the held time"
CHURN_RATIO = 0.5  # replacement connections per checkout (as DBConnectionChurnHigh)
CHURN_MIN_PER_MINUTE = 1.0  # and at least this many per minute (as DBConnectionChurnHigh)
PEAK_RATE_DIVISOR = 10  # the peak checkout rate is the busiest W/10 of the window,
PEAK_RATE_MAX = 300.0  # or of 5 minutes when W/10 is longer

KINDS = ("undersized", "oversized", "held_outside_queries", "slow_queries", "leak", "churn",
         "server_full", "budget_exceeded", "healthy")  # fmt: skip

K = f"{n.JOB}, {n.INSTANCE}, {n.POOL}"
Key = tuple[str, str, str]
SERVER = f"{n.SERVER_ADDRESS}, {n.SERVER_PORT}"


@dataclass(frozen=True)
class Measurement:
    name: str
    promql: str
    value: float | None

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "promql": self.promql, "value": self.value}


@dataclass(frozen=True)
class Finding:
    kind: str
    rule: str
    measurements: tuple[Measurement, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule,
                               "measurements": [m.json() for m in self.measurements]}  # fmt: skip
        out.update(self.details)
        return out


@dataclass
class PoolReport:
    job: str
    instance: str
    pool: str
    findings: list[Finding]
    recommended: Recommendation | None
    current: dict[str, str]


class _Queries:
    """The PromQL of one diagnosis, run once each for every pool at the same instant."""

    def __init__(self, prom: Prometheus, selector: str | None, window: float, at: float) -> None:
        self.prom = prom
        self.inner = selector_matchers(selector)
        self.w = format_duration(window)
        # Shorter than the scrape interval, rate() has nothing: sizing falls back to the mean.
        rate = min(window / PEAK_RATE_DIVISOR, PEAK_RATE_MAX)
        self.r, self.step = format_duration(rate), format_duration(rate / 2)
        self.at = at

    def m(self, metric: str, *extra: str) -> str:
        matchers = ", ".join(x for x in (self.inner, *extra) if x)
        return f"{metric}{{{matchers}}}" if matchers else metric

    def by_key(self, expr: str, *labels: str) -> tuple[str, dict[tuple[str, ...], float]]:
        out: dict[tuple[str, ...], float] = {}
        for s in self.prom.query(expr, self.at):
            if math.isfinite(s.value):  # NaN: histogram_quantile without observations
                key = tuple(s.labels.get(k, "") for k in (n.JOB, n.INSTANCE, n.POOL, *labels))
                out[key] = s.value
        return expr, out

    def raw(self, expr: str) -> list[Series]:
        return self.prom.query(expr, self.at)


@dataclass
class _Data:
    values: dict[str, tuple[str, dict[tuple[str, ...], float]]]
    summaries: tuple[str, dict[tuple[str, ...], float]]
    summary_counts: tuple[str, dict[tuple[str, ...], float]]
    info: dict[Key, dict[str, str]]
    servers: dict[tuple[str, str], dict[str, float]]
    fleet_promql: dict[str, str]
    instances: dict[tuple[str, str], int]

    def get(self, name: str, key: Key) -> Measurement:
        expr, result = self.values.get(name, ("", {}))
        return Measurement(name, expr, result.get(key))


def _collect(q: _Queries) -> _Data:
    w, m = q.w, q.m
    used = m(n.COUNT, f'{n.STATE}="{n.USED}"')
    idle = m(n.COUNT, f'{n.STATE}="{n.IDLE}"')
    refused = m(n.CONNECTION_ERRORS, f'{n.ERROR_TYPE}="{n.ERROR_TOO_MANY_CONNECTIONS}"')
    p = HOLD_PERCENTILE
    exprs = {
        "max": f"max by ({K}) (max_over_time({m(n.MAX)}[{w}]))",
        "used_max": f"max by ({K}) (max_over_time({used}[{w}]))",
        "idle_min": f"min by ({K}) (min_over_time({idle}[{w}]))",
        "open_now": f"sum by ({K}) ({m(n.COUNT)})",
        "open_before": f"sum by ({K}) ({m(n.COUNT)} offset {w})",
        "pending_max": f"max by ({K}) (max_over_time({m(n.PENDING)}[{w}]))",
        "timeouts": f"sum by ({K}) (increase({m(n.CONNECTION_TIMEOUTS)}[{w}]))",
        "checkouts": f"sum by ({K}) (increase({m(n.WAIT_TIME + '_count')}[{w}]))",
        "wait_seconds": f"sum by ({K}) (increase({m(n.WAIT_TIME + '_sum')}[{w}]))",
        "wait_p95": f"histogram_quantile(0.95, sum by ({K}, le) "
                    f"(increase({m(n.WAIT_TIME + '_bucket')}[{w}])))",
        "peak_checkout_rate": f"max_over_time(sum by ({K}) "
                              f"(rate({m(n.WAIT_TIME + '_count')}[{q.r}]))[{w}:{q.step}])",
        "holds": f"sum by ({K}) (increase({m(n.USE_TIME + '_count')}[{w}]))",
        "hold_seconds": f"sum by ({K}) (increase({m(n.USE_TIME + '_sum')}[{w}]))",
        "hold_p": f"histogram_quantile({p:g}, sum by ({K}, le) "
                  f"(increase({m(n.USE_TIME + '_bucket')}[{w}])))",
        "statement_seconds": f"sum by ({K}) (increase({m(n.OPERATION_DURATION + '_sum')}[{w}]))",
        "statements": f"sum by ({K}) (increase({m(n.OPERATION_DURATION + '_count')}[{w}]))",
        "created": f"sum by ({K}) (increase({m(n.CREATE_TIME + '_count')}[{w}]))",
        "leaked_max": f"max by ({K}) (max_over_time({m(n.CONNECTION_LEAKED)}[{w}]))",
        "leaks": f"sum by ({K}) (increase({m(n.CONNECTION_LEAKS)}[{w}]))",
        "refused_full": f"sum by ({K}) (increase({refused}[{w}]))",
        "server_max": f"min by ({K}) (last_over_time({m(n.SERVER_CONNECTIONS_MAX)}[{w}]))",
    }  # fmt: skip
    values = {name: q.by_key(expr) for name, expr in exprs.items()}
    summaries = q.by_key(f"sum by ({K}, {n.QUERY_SUMMARY}) "
                         f"(increase({m(n.OPERATION_DURATION + '_sum')}[{w}]))", n.QUERY_SUMMARY)
    summary_counts = q.by_key(f"sum by ({K}, {n.QUERY_SUMMARY}) "
                              f"(increase({m(n.OPERATION_DURATION + '_count')}[{w}]))",
                              n.QUERY_SUMMARY)  # fmt: skip

    info: dict[Key, dict[str, str]] = {}
    for s in q.raw(f"last_over_time({m(n.POOL_INFO)}[{w}])"):
        key = (s.labels.get(n.JOB, ""), s.labels.get(n.INSTANCE, ""), s.labels.get(n.POOL, ""))
        info[key] = s.labels

    # The fleet: every pool on a server, whatever the selector (the limit is shared).
    info_by_server = f"max by ({K}, {SERVER}) ({n.POOL_INFO})"
    fleet = {
        "demand": f"sum by ({SERVER}) (max by ({K}) ({n.MAX}) * on ({K}) "
                  f"group_left ({SERVER}) {info_by_server})",
        "limit": f"min by ({SERVER}) (max by ({K}) ({n.SERVER_CONNECTIONS_MAX}) * on ({K}) "
                 f"group_left ({SERVER}) {info_by_server})",
    }  # fmt: skip
    servers: dict[tuple[str, str], dict[str, float]] = {}
    for what, expr in fleet.items():
        for s in q.raw(expr):
            server = (s.labels.get(n.SERVER_ADDRESS, ""), s.labels.get(n.SERVER_PORT, ""))
            servers.setdefault(server, {})[what] = s.value
    instances_expr = f"count by ({n.JOB}, {n.POOL}) (max by ({K}) ({n.COUNT}))"
    instances = {(s.labels.get(n.JOB, ""), s.labels.get(n.POOL, "")): int(s.value)
                 for s in q.raw(instances_expr)}  # fmt: skip
    fleet["instances"] = instances_expr
    return _Data(values, summaries, summary_counts, info, servers, fleet, instances)


def _pools(q: _Queries) -> list[Key]:
    expr = f"count by ({K}) (count_over_time({q.m(n.COUNT)}[{q.w}]))"
    return sorted((s.labels.get(n.JOB, ""), s.labels.get(n.INSTANCE, ""), s.labels.get(n.POOL, ""))
                  for s in q.raw(expr))  # fmt: skip


def _v(m: Measurement, default: float = 0.0) -> float:
    return default if m.value is None else m.value


class _Pool:
    def __init__(self, data: _Data, key: Key, window: float) -> None:
        self.data, self.key, self.window = data, key, window

    def __call__(self, name: str) -> Measurement:
        return self.data.get(name, self.key)

    def slow_summaries(self) -> list[dict[str, Any]]:  # by time, biggest first
        _, seconds = self.data.summaries
        _, counts = self.data.summary_counts
        slow: list[dict[str, Any]] = []
        for k, total in seconds.items():
            if k[:3] != self.key:
                continue
            count = counts.get(k, 0.0)
            if count > 0 and total / count >= SLOW_QUERY_SECONDS:
                slow.append({"summary": k[3], "seconds": total, "executions": count,
                             "mean_seconds": total / count})  # fmt: skip
        slow.sort(key=lambda s: -s["seconds"])
        return slow[:SLOW_QUERY_TOP]

    def server(self) -> tuple[tuple[str, str], dict[str, float]] | None:
        labels = self.data.info.get(self.key, {})
        server = (labels.get(n.SERVER_ADDRESS, ""), labels.get(n.SERVER_PORT, ""))
        if not server[0]:
            return None
        return server, self.data.servers.get(server, {})


Rule = Callable[[_Pool, list[Finding]], Finding | None]


def _slow_queries(p: _Pool, found: list[Finding]) -> Finding | None:
    held, stmt = p("hold_seconds"), p("statement_seconds")
    slow = p.slow_summaries()
    base = max(_v(held), _v(stmt))
    share = sum(float(s["seconds"]) for s in slow) / base if base > 0 else 0.0
    if not slow or share < SLOW_QUERY_HELD_SHARE:
        return None
    expr, _ = p.data.summaries
    return Finding(
        "slow_queries",
        f"summaries with a mean of at least {SLOW_QUERY_SECONDS:g} s (the {SLOW_QUERY_TOP}"
        f" biggest) took {share:.0%} of the held time (threshold {SLOW_QUERY_HELD_SHARE:.0%})",
        (held, stmt, Measurement("slow_share_of_held_time", expr, share)),
        {"summaries": slow},
    )


def _undersized(p: _Pool, found: list[Finding]) -> Finding | None:
    cmax, used, wait, timeouts = p("max"), p("used_max"), p("wait_p95"), p("timeouts")
    waits, checkouts = p("wait_seconds"), p("checkouts")
    if cmax.value is None or _v(cmax) <= 0 or _v(used) < _v(cmax):
        return None
    mean = _v(waits) / _v(checkouts) if _v(checkouts) > 0 else 0.0
    waited = max(_v(wait), mean) >= UNDERSIZED_WAIT or _v(timeouts) > 0
    if not waited or any(f.kind == "slow_queries" for f in found):
        return None
    return Finding(
        "undersized",
        f"used connections reached the maximum ({_v(cmax):.0f}) and callers waited (wait p95"
        f" {_v(wait):.3g} s, mean {mean:.3g} s, threshold {UNDERSIZED_WAIT:g} s; timeouts"
        f" {_v(timeouts):.0f}) while statements were fast",
        (cmax, used, wait, waits, checkouts, timeouts, p("pending_max")),
    )


def _oversized(p: _Pool, found: list[Finding]) -> Finding | None:
    cmax, used, idle = p("max"), p("used_max"), p("idle_min")
    if cmax.value is None or _v(cmax) <= 0 or _v(used) > OVERSIZED_USE_SHARE * _v(cmax):
        return None
    server = p.server()
    pressed = False
    details: dict[str, Any] = {}
    if server is not None and "limit" in server[1] and "demand" in server[1]:
        demand, limit = server[1]["demand"], server[1]["limit"]
        pressed = demand >= SERVER_PRESSURE_SHARE * limit
        details = {"server": f"{server[0][0]}:{server[0][1]}", "fleet_maxima": demand,
                   "server_limit": limit, "fleet_promql": p.data.fleet_promql}  # fmt: skip
    idle_all_window = _v(idle) >= OVERSIZED_IDLE_CONNECTIONS
    if not (pressed or idle_all_window):
        return None
    why = ("the fleet's maxima on its server reach"
           f" {SERVER_PRESSURE_SHARE:.0%} of the server's limit" if pressed else
           f"it kept at least {OVERSIZED_IDLE_CONNECTIONS} connections idle the whole window")
    return Finding(
        "oversized",
        f"used at most {_v(used):.0f} of {_v(cmax):.0f} connections (<="
        f" {OVERSIZED_USE_SHARE:.0%}) and {why}",
        (cmax, used, idle),
        details,
    )  # fmt: skip


def _held_outside(p: _Pool, found: list[Finding]) -> Finding | None:
    held, holds, stmt, statements = p("hold_seconds"), p("holds"), p("statement_seconds"), p(
        "statements")
    if _v(holds) <= 0 or _v(statements) <= 0 or _v(held) <= 0:
        return None
    mean_hold = _v(held) / _v(holds)
    share = _v(stmt) / _v(held)
    if mean_hold < HELD_MIN_SECONDS or share > HELD_STATEMENT_SHARE:
        return None
    return Finding(
        "held_outside_queries",
        f"statements took {share:.0%} of the time connections were held (<="
        f" {HELD_STATEMENT_SHARE:.0%}), mean hold {mean_hold:.3g} s (>= {HELD_MIN_SECONDS:g} s)",
        (held, holds, stmt, statements),
    )


def _leak(p: _Pool, found: list[Finding]) -> Finding | None:
    leaked, leaks = p("leaked_max"), p("leaks")
    if _v(leaked) < 1 and _v(leaks) <= 0:
        return None
    return Finding("leak", "connections were held past the pool's leak_threshold",
                   (leaked, leaks))  # fmt: skip


def _churn(p: _Pool, found: list[Finding]) -> Finding | None:
    created, checkouts = p("created"), p("checkouts")
    now, before = p("open_now"), p("open_before")
    if _v(checkouts) <= 0:
        return None
    replaced = max(0.0, _v(created) - max(0.0, _v(now) - _v(before)))
    ratio = replaced / _v(checkouts)
    per_minute = replaced / p.window * 60
    if ratio < CHURN_RATIO or per_minute < CHURN_MIN_PER_MINUTE:
        return None
    return Finding(
        "churn",
        f"{replaced:.0f} connections opened to replace closed ones: {ratio:.2f} per checkout"
        f" (>= {CHURN_RATIO:g}), {per_minute:.3g}/min (>= {CHURN_MIN_PER_MINUTE:g})",
        (created, checkouts, now, before),
    )


def _server_full(p: _Pool, found: list[Finding]) -> Finding | None:
    refused = p("refused_full")
    if _v(refused) <= 0:
        return None
    return Finding("server_full", "the server refused new connections as full", (refused,))


def _budget_exceeded(p: _Pool, found: list[Finding]) -> Finding | None:
    server = p.server()
    if server is None or "limit" not in server[1] or "demand" not in server[1]:
        return None
    demand, limit = server[1]["demand"], server[1]["limit"]
    if demand <= limit:
        return None
    return Finding(
        "budget_exceeded",
        f"the maxima of every pool on {server[0][0]}:{server[0][1]} ({demand:.0f}) exceed the"
        f" server's limit ({limit:.0f})",
        (p("server_max"),),
        {"server": f"{server[0][0]}:{server[0][1]}", "fleet_maxima": demand,
         "server_limit": limit, "fleet_promql": p.data.fleet_promql},
    )  # fmt: skip


# slow_queries first: undersized reads its verdict.
RULES: tuple[Rule, ...] = (_slow_queries, _undersized, _oversized, _held_outside, _leak, _churn,
                           _server_full, _budget_exceeded)  # fmt: skip


def _recommend(p: _Pool) -> Recommendation | None:
    checkouts, holds = _v(p("checkouts")), _v(p("holds"))
    job, _, pool = p.key
    return recommend(Demand(
        checkouts=checkouts,
        window=p.window,
        peak_rate=p("peak_checkout_rate").value,
        wait_mean=_v(p("wait_seconds")) / checkouts if checkouts > 0 else 0.0,
        hold_mean=_v(p("hold_seconds")) / holds if holds > 0 else 0.0,
        hold_p=p("hold_p").value,
        server_max=p("server_max").value,
        instances=p.data.instances.get((job, pool), 1),
    ))  # fmt: skip


def _findings(p: _Pool) -> list[Finding]:
    found: list[Finding] = []
    for rule in RULES:
        finding = rule(p, found)
        if finding is not None:
            found.append(finding)
    if not found:
        found.append(Finding("healthy", "no rule applies"))
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(found, key=lambda f: order[f.kind])


def diagnose(prom: Prometheus, selector: str | None, window: float, at: float) -> list[PoolReport]:
    """Every pool the selector matches within the window, diagnosed. Raises PrometheusError when
    the data cannot be read, ValueError for a malformed selector."""
    q = _Queries(prom, selector, window, at)
    pools = _pools(q)
    if not pools:
        return []
    data = _collect(q)
    reports = []
    for key in pools:
        p = _Pool(data, key, window)
        found = _findings(p)
        labels = data.info.get(key, {})
        current = {k: labels[k] for k in ("pool_class", "pool_size", "max_overflow", "timeout")
                   if labels.get(k)}  # fmt: skip
        reports.append(PoolReport(key[0], key[1], key[2], found, _recommend(p), current))
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
    parser.add_argument("--selector", help="label matchers, e.g. '{job=\"api\"}'")
    parser.add_argument("--window", default="1h", help="how much history to read (default: 1h)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for each query (default: 30)")  # fmt: skip


def _fail(message: str) -> int:
    print(f"poolwatch doctor: {message}", file=sys.stderr)
    return 2


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

