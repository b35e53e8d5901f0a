"""The demo's pool as the view shows it: a row of numbers read from the demo's own registry, with
``poolwatch top``'s row model (:mod:`poolwatch.tools.rows`)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from poolwatch.tools import names as n
from poolwatch.tools.rows import pool_rows
from poolwatch.tools.scrape import Read, Sample, bucket_quantile, registry_read

__all__ = ["WAIT_WINDOW", "PoolRow", "PoolView"]

WAIT_WINDOW = 5.0  # seconds of checkout waits the view's p99 covers


@dataclass(frozen=True)
class PoolRow:
    """One pool's numbers, as the view shows them."""

    used: int
    idle: int
    max: int
    waiting: int
    timeouts: int
    leaked: int
    wait_p99: float  # seconds, over the last ``window`` seconds
    window: float


class PoolView:
    """The demo's pool as ``poolwatch top`` reads it (its row model, over reads of the demo's own
    registry), with the checkout waits' p99 over the last ``window`` seconds."""

    def __init__(self, registry: CollectorRegistry, pool: str, window: float = WAIT_WINDOW) -> None:
        self.registry = registry
        self.pool = pool
        self.window = window
        # Reads of the registry, oldest first; the first is before the workload starts.
        self._reads: deque[Read] = deque([registry_read(registry)])

    def row(self) -> PoolRow:
        now = registry_read(self.registry)
        reads = self._reads
        while len(reads) > 1 and reads[1].at <= now.at - self.window:
            reads.popleft()
        before = reads[0]
        reads.append(now)
        top = next((r for r in pool_rows([now], [before]) if r.pool == self.pool), None)
        if top is None:  # not registered (yet, or any more)
            return PoolRow(0, 0, 0, 0, 0, 0, 0.0, self.window)
        return PoolRow(
            used=int(top.used),
            idle=int(top.idle),
            max=int(top.max or 0),
            waiting=int(top.waiting),
            timeouts=int(_value(now, n.CONNECTION_TIMEOUTS, self.pool)),
            leaked=int(top.leaked or 0),
            wait_p99=self._wait_p99(now, before),
            window=self.window,
        )

    def _wait_p99(self, now: Read, before: Read) -> float:
        """``histogram_quantile(0.99, rate(..._bucket[window]))``, as Prometheus would read it
        (since the start while the demo is younger than the window)."""
        name = n.WAIT_TIME + "_bucket"
        counts = {float(s.labels[n.LE]): s.value for s in _samples(now, name, self.pool)}
        for s in _samples(before, name, self.pool):
            counts[float(s.labels[n.LE])] -= s.value
        return bucket_quantile(0.99, counts) or 0.0


def _samples(read: Read, name: str, pool: str) -> list[Sample]:
    return [s for s in read.samples if s.name == name and s.labels.get(n.POOL) == pool]


def _value(read: Read, name: str, pool: str) -> float:
    return sum(s.value for s in _samples(read, name, pool))
