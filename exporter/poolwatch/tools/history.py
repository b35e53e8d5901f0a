"""What ``poolwatch doctor`` reads: the PromQL it runs over the window (W), once each for every
pool at the same instant, and what each query returned, by pool (job, instance, pool name)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import names as n
from .promql import Prometheus, Series, format_duration, selector_matchers
from .sizing import HOLD_PERCENTILE

__all__ = [
    "PEAK_RATE_DIVISOR",
    "PEAK_RATE_MAX",
    "Data",
    "Key",
    "Measurement",
    "Queries",
    "collect",
    "pools",
]

PEAK_RATE_DIVISOR = 10  # the peak checkout rate is the busiest W/10 of the window,
PEAK_RATE_MAX = 300.0  # or of 5 minutes when W/10 is longer

K = f"{n.JOB}, {n.INSTANCE}, {n.POOL}"
Key = tuple[str, str, str]  # job, instance, pool name
SERVER = f"{n.SERVER_ADDRESS}, {n.SERVER_PORT}"


@dataclass(frozen=True)
class Measurement:
    name: str
    promql: str
    value: float | None

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "promql": self.promql, "value": self.value}


class Queries:
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
class Data:
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


def collect(q: Queries) -> Data:
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
    summaries = q.by_key(
        f"sum by ({K}, {n.QUERY_SUMMARY}) (increase({m(n.OPERATION_DURATION + '_sum')}[{w}]))",
        n.QUERY_SUMMARY,
    )
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
    return Data(values, summaries, summary_counts, info, servers, fleet, instances)


def pools(q: Queries) -> list[Key]:
    expr = f"count by ({K}) (count_over_time({q.m(n.COUNT)}[{q.w}]))"
    return sorted((s.labels.get(n.JOB, ""), s.labels.get(n.INSTANCE, ""), s.labels.get(n.POOL, ""))
                  for s in q.raw(expr))  # fmt: skip
