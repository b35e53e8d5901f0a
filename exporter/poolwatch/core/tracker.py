"""The interface the pool and statement listeners talk to, one implementation per backend.

Modelled on HikariCP's ``IMetricsTracker``: the listeners know nothing about Prometheus or
OpenTelemetry. Hot-path recorders (``wait``, ``use``, a statement :class:`Sink`'s ``record``) are
attributes holding pre-bound callables so a checkout costs one call per observation, with label
lookups done once per pool. A backend may defer the work of a recorder (poolwatch's Prometheus
histograms queue the value with a ``deque.append``); then the listener, not the recorder, checks
``pending()`` after recording and calls ``drain()`` past :data:`PENDING_LIMIT`, so a recorder
stays a C call and the checkout path gains no Python frame for the bookkeeping. The pool
listeners read ``wait``, ``use``, ``pending`` and ``drain`` once, when they are installed.
Gauges (connections by state, pending requests, limits) are not pushed through the tracker: each
backend reads them from :class:`poolwatch.core.state.PoolState` when it collects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

__all__ = [
    "NOTHING_PENDING",
    "NULL_TRACKER",
    "PENDING_LIMIT",
    "BaseTracker",
    "CompositeTracker",
    "NullTracker",
    "PoolTracker",
    "Recorder",
    "Sink",
    "combine",
    "immediate",
]

Recorder = Callable[[float], None]

PENDING_LIMIT = 128
"""Deferred values a backend may hold before the listener that recorded them calls ``drain()``
(about 4 KB a queue); folding them in batches costs a few dozen instructions a value."""

NOTHING_PENDING: Callable[[], int] = ().__len__
"""``pending`` of a backend that defers nothing: always 0, and a C call (no Python frame)."""


class Sink(Protocol):
    """Where one series' values go: ``record`` on the hot path, then ``pending()`` and, past
    :data:`PENDING_LIMIT`, ``drain()`` (see the module docstring)."""

    @property
    def record(self) -> Recorder: ...

    @property
    def pending(self) -> Callable[[], int]: ...

    def drain(self) -> None: ...


def _no_drain() -> None:
    return None


class _Sink(NamedTuple):
    record: Recorder
    pending: Callable[[], int] = NOTHING_PENDING
    drain: Callable[[], None] = _no_drain


def immediate(record: Recorder) -> Sink:
    """A :class:`Sink` whose ``record`` does all its work at once."""
    return _Sink(record)


class PoolTracker(Protocol):
    wait: Recorder
    """A checkout's wait, in seconds (every checkout, including ones that timed out)."""
    use: Recorder
    """How long a connection was held, checkout to checkin."""
    pending: Callable[[], int]
    """How many values ``wait`` has deferred; the listeners read it after every checkout and
    call :meth:`drain` past :data:`PENDING_LIMIT`. Every use belongs to a checkout whose wait
    was recorded, so after a drain of both, uses never outnumber waits by more than the
    connections checked out at the time: watching the waits keeps both queues short."""

    def drain(self) -> None:
        """Fold the values ``wait`` and ``use`` deferred into the series."""

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

    def statement(self, operation: str, summary: str) -> Sink:
        """Where successful statements of one summary go (resolved once, then cached)."""
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


class BaseTracker:
    """A tracker that records nothing: the base of every backend's tracker (each overrides what
    it records; batching, ``pending``/``drain``, is the one capability a backend adds only if it
    defers values), and by itself the tracker of a pool with every backend off, so listeners need
    no ``if`` on the hot path."""

    wait: Recorder = staticmethod(_ignore)
    use: Recorder = staticmethod(_ignore)
    pending: Callable[[], int] = NOTHING_PENDING

    def drain(self) -> None:
        pass

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

    def statement(self, operation: str, summary: str) -> Sink:
        return _IGNORED

    def statement_failed(
        self, operation: str, summary: str, error_type: str, seconds: float
    ) -> None:
        pass

    def summary_folded(self) -> None:
        pass

    def close(self) -> None:
        pass


NullTracker = BaseTracker
NULL_TRACKER: PoolTracker = BaseTracker()
_IGNORED = immediate(_ignore)


def _fan_out(recorders: Sequence[Recorder]) -> Recorder:
    def record(seconds: float) -> None:
        for r in recorders:
            r(seconds)

    return record


def _most_pending(counts: Sequence[Callable[[], int]]) -> Callable[[], int]:
    def pending() -> int:
        return max(count() for count in counts)

    return pending


def _drain_all(drains: Sequence[Callable[[], None]]) -> Callable[[], None]:
    def drain() -> None:
        for d in drains:
            d()

    return drain


class CompositeTracker:
    """Several backends at once (Prometheus and OpenTelemetry metrics side by side)."""

    def __init__(self, trackers: Sequence[PoolTracker]) -> None:
        self._trackers = tuple(trackers)
        self.wait = _fan_out([t.wait for t in self._trackers])
        self.use = _fan_out([t.use for t in self._trackers])
        self.pending = _most_pending([t.pending for t in self._trackers])
        self.drain = _drain_all([t.drain for t in self._trackers])

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

    def statement(self, operation: str, summary: str) -> Sink:
        sinks = [t.statement(operation, summary) for t in self._trackers]
        return _Sink(
            _fan_out([s.record for s in sinks]),
            _most_pending([s.pending for s in sinks]),
            _drain_all([s.drain for s in sinks]),
        )

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
