"""``poolwatch doctor``'s rules: the findings for one pool from what its queries returned
(:mod:`poolwatch.tools.history`), and the size :mod:`poolwatch.tools.sizing` recommends for it.

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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import names as n
from .history import Data, Key, Measurement
from .sizing import Demand, Recommendation, recommend

__all__ = [
    "CHURN_MIN_PER_MINUTE",
    "CHURN_RATIO",
    "HELD_MIN_SECONDS",
    "HELD_STATEMENT_SHARE",
    "KINDS",
    "OVERSIZED_IDLE_CONNECTIONS",
    "OVERSIZED_USE_SHARE",
    "RULES",
    "SERVER_PRESSURE_SHARE",
    "SLOW_QUERY_HELD_SHARE",
    "SLOW_QUERY_SECONDS",
    "SLOW_QUERY_TOP",
    "UNDERSIZED_WAIT",
    "Finding",
    "Pool",
    "find",
    "recommendation",
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

KINDS = ("undersized", "oversized", "held_outside_queries", "slow_queries", "leak", "churn",
         "server_full", "budget_exceeded", "healthy")  # fmt: skip


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


def _v(m: Measurement, default: float = 0.0) -> float:
    return default if m.value is None else m.value


class Pool:
    """One pool's share of a diagnosis: its measurements by name, its slow summaries, its server."""

    def __init__(self, data: Data, key: Key, window: float) -> None:
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


Rule = Callable[[Pool, list[Finding]], Finding | None]


def _slow_queries(p: Pool, found: list[Finding]) -> Finding | None:
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


def _undersized(p: Pool, found: list[Finding]) -> Finding | None:
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


def _oversized(p: Pool, found: list[Finding]) -> Finding | None:
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
    why = (
        f"the fleet's maxima on its server reach {SERVER_PRESSURE_SHARE:.0%} of the server's limit"
        if pressed
        else f"it kept at least {OVERSIZED_IDLE_CONNECTIONS} connections idle the whole window"
    )
    return Finding(
        "oversized",
        f"used at most {_v(used):.0f} of {_v(cmax):.0f} connections (<="
        f" {OVERSIZED_USE_SHARE:.0%}) and {why}",
        (cmax, used, idle),
        details,
    )  # fmt: skip


def _held_outside(p: Pool, found: list[Finding]) -> Finding | None:
    held, holds, stmt, statements = (
        p("hold_seconds"),
        p("holds"),
        p("statement_seconds"),
        p("statements"),
    )
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


def _leak(p: Pool, found: list[Finding]) -> Finding | None:
    leaked, leaks = p("leaked_max"), p("leaks")
    if _v(leaked) < 1 and _v(leaks) <= 0:
        return None
    return Finding("leak", "connections were held past the pool's leak_threshold",
                   (leaked, leaks))  # fmt: skip


def _churn(p: Pool, found: list[Finding]) -> Finding | None:
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


def _server_full(p: Pool, found: list[Finding]) -> Finding | None:
    refused = p("refused_full")
    if _v(refused) <= 0:
        return None
    return Finding("server_full", "the server refused new connections as full", (refused,))


def _budget_exceeded(p: Pool, found: list[Finding]) -> Finding | None:
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


def recommendation(p: Pool) -> Recommendation | None:
    """The size for the pool's demand over the window; None without checkouts to size from."""
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


def find(p: Pool) -> list[Finding]:
    """Every rule's finding for the pool (``healthy`` when none applies), in the order of KINDS."""
    found: list[Finding] = []
    for rule in RULES:
        finding = rule(p, found)
        if finding is not None:
            found.append(finding)
    if not found:
        found.append(Finding("healthy", "no rule applies"))
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(found, key=lambda f: order[f.kind])
