"""The interface the pool and statement listeners talk to, one implementation per backend.

Modelled on HikariCP's ``IMetricsTracker``: the listeners know nothing about Prometheus or
OpenTelemetry. Hot-path recorders (``wait``, ``use``) are attributes holding pre-bound callables
so a checkout costs one call per observation, with label lookups done once per pool.
Gauges (connections by state, pending requests, limits) are not pushed through the tracker: each
backend reads them from :class:`poolwatch.state.PoolState` when it collects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = [
    "NULL_TRACKER",
    "CompositeTracker",
    "NullTracker",
    "PoolTracker",
    "Recorder",
    "combine",
]

Recorder = Callable[[float], None]


class PoolTracker(Protocol):
    wait: Recorder
    """A checkout's wait, in seconds (every checkout, including ones that timed out)."""
    use: Recorder
    """How long a connection was held, checkout to checkin."""

    def created(self, seconds: float) -> None:
        """A new DBAPI connection was opened."""

    def timed_out(self) -> None:
        """A checkout gave up waiting (its wait is also passed to ``wait``)."""

    def connection_error(self, error_type: str) -> None:
        """A checkout failed with an error other than a timeout."""

    def invalidated(self, kind: str, reason: str) -> None:
        """A connection was invalidated (``kind``: hard, soft, pre_ping)."""

    def leak_detected(self) -> None:
        """A connection was held past the leak threshold."""

    def statement(self, operation: str, summary: str) -> Recorder:
        """The recorder for successful statements of one summary (resolved once, then cached)."""
        ...

    def statement_failed(
        self, operation: str, summary: str, error_type: str, seconds: float
    ) -> None:
        """A statement that raised."""

    def summary_folded(self) -> None:
        """A statement counted under ``other`` because the summary cap was reached."""

    def close(self) -> None:
        """Stop exporting this pool's series."""


def _ignore(_seconds: float) -> None:
    return None


class NullTracker:
    """Records nothing: used when a backend is off, so listeners need no ``if`` on the hot path."""

    wait: Recorder = staticmethod(_ignore)
    use: Recorder = staticmethod(_ignore)

    def created(self, seconds: float) -> None:
        pass

    def timed_out(self) -> None:
        pass

    def connection_error(self, error_type: str) -> None:
        pass

    def invalidated(self, kind: str, reason: str) -> None:
        pass

    def leak_detected(self) -> None:
        pass

    def statement(self, operation: str, summary: str) -> Recorder:
        return _ignore

    def statement_failed(
        self, operation: str, summary: str, error_type: str, seconds: float
    ) -> None:
        pass

    def summary_folded(self) -> None:
        pass

    def close(self) -> None:
        pass


NULL_TRACKER: PoolTracker = NullTracker()


def _fan_out(recorders: Sequence[Recorder]) -> Recorder:
    def record(seconds: float) -> None:
        for r in recorders:
            r(seconds)

    return record


class CompositeTracker:
    """Several backends at once (Prometheus and OpenTelemetry metrics side by side)."""

    def __init__(self, trackers: Sequence[PoolTracker]) -> None:
        self._trackers = tuple(trackers)
        self.wait = _fan_out([t.wait for t in self._trackers])
        self.use = _fan_out([t.use for t in self._trackers])

    def created(self, seconds: float) -> None:
        for t in self._trackers:
            t.created(seconds)

    def timed_out(self) -> None:
        for t in self._trackers:
            t.timed_out()

    def connection_error(self, error_type: str) -> None:
        for t in self._trackers:
            t.connection_error(error_type)

    def invalidated(self, kind: str, reason: str) -> None:
        for t in self._trackers:
            t.invalidated(kind, reason)

    def leak_detected(self) -> None:
        for t in self._trackers:
            t.leak_detected()

    def statement(self, operation: str, summary: str) -> Recorder:
        return _fan_out([t.statement(operation, summary) for t in self._trackers])

    def statement_failed(
        self, operation: str, summary: str, error_type: str, seconds: float
    ) -> None:
        for t in self._trackers:
            t.statement_failed(operation, summary, error_type, seconds)

    def summary_folded(self) -> None:
        for t in self._trackers:
            t.summary_folded()

    def close(self) -> None:
        for t in self._trackers:
            t.close()


def combine(trackers: Sequence[PoolTracker]) -> PoolTracker:
    if not trackers:
        return NULL_TRACKER
    if len(trackers) == 1:
        return trackers[0]
    return CompositeTracker(trackers)
