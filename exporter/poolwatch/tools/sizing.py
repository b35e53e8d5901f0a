"""Pool sizing from Little's law, with the arithmetic written out.

Little's law: the average number of callers in a system equals their arrival rate times the time
each spends in it. A caller "in the pool" is one that asked for a connection and has not given it
back: it waits, then holds. So the connections a pool must have to serve its callers without
making them wait are

    concurrency = checkout rate x (wait + hold)

The wait is included because the observed checkout rate is throttled by an undersized pool
(callers who wait check out less often): rate x (wait + hold) is the concurrency the callers
asked for, and equals rate x hold once nobody waits. ``pool_size`` covers the mean demand (the
window's mean rate, mean hold), the total (``pool_size + max_overflow``) covers the peak (the
busiest rate interval, the hold at :data:`HOLD_PERCENTILE`), each times :data:`HEADROOM`. With the
server's connection limit known, the total is capped at the limit divided over the service's
instances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["HEADROOM", "HOLD_PERCENTILE", "MIN_POOL_SIZE", "Demand", "Recommendation", "recommend"]

HOLD_PERCENTILE = 0.95  # the hold time the peak is sized for
HEADROOM = 1.2  # margin over the computed concurrency (bursts shorter than the rate interval)
MIN_POOL_SIZE = 1


@dataclass(frozen=True)
class Demand:
    """What the window showed for one pool on one instance."""

    checkouts: float  # in the window
    window: float  # seconds
    peak_rate: float | None  # checkouts/s in the busiest rate interval
    wait_mean: float  # seconds
    hold_mean: float  # seconds
    hold_p: float | None  # seconds, at HOLD_PERCENTILE
    server_max: float | None = None  # poolwatch_server_connections_max, where known
    instances: int = 1  # instances of the service sharing that limit


@dataclass(frozen=True)
class Recommendation:
    pool_size: int
    max_overflow: int
    arithmetic: list[str] = field(default_factory=list)


def _s(v: float) -> str:
    return f"{v:.4g} s"


def recommend(d: Demand) -> Recommendation | None:
    """None when the window holds no checkout to size from."""
    if d.checkouts <= 0 or d.window <= 0:
        return None
    mean_rate = d.checkouts / d.window
    peak_rate = max(d.peak_rate if d.peak_rate is not None else mean_rate, mean_rate)
    hold_p = max(d.hold_p if d.hold_p is not None else d.hold_mean, d.hold_mean)
    mean_demand = mean_rate * (d.wait_mean + d.hold_mean)
    peak_demand = peak_rate * (d.wait_mean + hold_p)
    pool_size = max(MIN_POOL_SIZE, math.ceil(mean_demand * HEADROOM))
    total = max(pool_size, math.ceil(peak_demand * HEADROOM))
    pct = f"p{HOLD_PERCENTILE * 100:g}"
    lines = [
        f"mean demand = {mean_rate:.4g} checkouts/s x ({_s(d.wait_mean)} wait + {_s(d.hold_mean)}"
        f" hold) = {mean_demand:.3g} connections; x {HEADROOM:g} headroom -> pool_size {pool_size}",
        f"peak demand = {peak_rate:.4g} checkouts/s x ({_s(d.wait_mean)} wait + {_s(hold_p)}"
        f" hold {pct}) = {peak_demand:.3g} connections; x {HEADROOM:g} headroom -> {total}"
        f" in all, max_overflow {total - pool_size}",
    ]
    if d.server_max is not None:
        instances = max(1, d.instances)
        cap = max(MIN_POOL_SIZE, math.floor(d.server_max / instances))
        if total > cap:
            pool_size = min(pool_size, cap)
            total = cap
            lines.append(
                f"capped: server limit {d.server_max:.0f} / {instances} instance(s) = {cap}"
                f" connections each -> pool_size {pool_size}, max_overflow {total - pool_size}"
            )
        else:
            lines.append(
                f"within the server's limit: {d.server_max:.0f} / {instances} instance(s) = {cap}"
                " connections each"
            )
    return Recommendation(pool_size, total - pool_size, lines)
