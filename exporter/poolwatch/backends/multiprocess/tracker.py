"""The multiprocess backend: each process writes its pools' series into prometheus_client's
multiprocess files, and any ``MultiProcessCollector`` shows the service's totals.

The hot path is the single-process backend's: waits, hold times, creations and statements are
recorded into poolwatch's own histograms (:mod:`poolwatch.backends.prometheus.histogram`: a C
bucket increment when compiled), never into a file. The process's sampler
(:mod:`poolwatch.core.sampler`) then, about once a second and at exit, writes each pool's gauges
(from :meth:`PoolState.snapshot`) and the buckets that changed. Counters of rare events
(timeouts, connection errors, invalidations, leaks) are written when they happen. Values are
absolute per process (a child starts from zero after ``fork()``), so a repeated flush is harmless.

How each series aggregates across processes is prometheus_client's multiprocess mode of its
gauge: ``livesum`` for what adds up (connections used and idle, callers waiting, the limits,
leaked connections), ``livemax`` for the longest current wait and the info series; counters and
histograms are summed over every process that ever ran, the dead ones' from the archive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from poolwatch.backends.multiprocess.files import directory, sweep, value_class
from poolwatch.backends.prometheus.histogram import Histogram, floatToGoString
from poolwatch.core import lifecycle
from poolwatch.core.errors import logger
from poolwatch.core.sampler import Job, sampler
from poolwatch.core.state import PoolLimits, PoolState
from poolwatch.core.tracker import Recorder, Sink

__all__ = ["FLUSH_INTERVAL", "MultiprocessTracker", "enabled"]

POOL_LABEL = "db_client_connection_pool_name"
STATE_LABEL = "db_client_connection_state"
FLUSH_INTERVAL = 1.0
"""Seconds between two writes of a process's gauges and buckets."""
SWEEP_EVERY = 5
"""Flushes between two sweeps of dead processes' files by each live process (a safety net for
servers that have no hook when a worker dies; poolwatch's collector sweeps at every scrape)."""

# (name, help, multiprocess mode). The gauges of PoolStateCollector, as prometheus_client's
# multiprocess mode aggregates them.
_GAUGES: dict[str, tuple[str, str]] = {
    "db_client_connection_count": (
        "Connections open now, by state (used = checked out, idle = open in the pool).",
        "livesum",
    ),
    "db_client_connection_max": (
        "Most connections the pool may open (QueuePool: pool_size + max_overflow).",
        "livesum",
    ),
    "db_client_connection_idle_max": (
        "Most idle connections the pool keeps (QueuePool: pool_size).",
        "livesum",
    ),
    "db_client_connection_idle_min": (
        "Fewest idle connections the pool keeps (psycopg_pool: min_size).",
        "livesum",
    ),
    "db_client_connection_pending_requests": (
        "Callers waiting for a connection right now.",
        "livesum",
    ),
    "poolwatch_connection_wait_longest_seconds": (
        "How long the caller that has waited longest so far has been waiting (0 if none).",
        "livemax",
    ),
    "poolwatch_connections_leaked": (
        "Connections checked out for longer than the leak threshold right now.",
        "livesum",
    ),
    "poolwatch_pool_info": ("The pool's configuration (value is always 1).", "livemax"),
}
_COUNTERS: dict[str, str] = {
    "db_client_connection_timeouts": (
        "Checkouts that gave up waiting for a connection (the pool raised its timeout error)."
    ),
    "poolwatch_connection_errors": (
        "Checkouts that failed with an error other than a timeout, usually because the "
        "database refused or dropped new connections."
    ),
    "poolwatch_connection_invalidations": (
        "Connections invalidated, by kind (hard, soft, pre_ping) and reason (exception type)."
    ),
    "poolwatch_connection_leaks": "Connections seen held longer than the leak threshold.",
    "poolwatch_query_summaries_folded": (
        'Statements counted under db_query_summary="other" because the cap was reached.'
    ),
    "poolwatch_instrumentation_errors": (
        "Errors inside poolwatch itself, by component; the application was not affected."
    ),
}
_HISTOGRAMS: dict[str, str] = {
    "db_client_connection_wait_time_seconds": (
        "Time from asking the pool for a connection to getting one (or timing out)."
    ),
    "db_client_connection_use_time_seconds": (
        "Time a connection was held, from checkout to checkin."
    ),
    "db_client_connection_create_time_seconds": (
        "Time to open a new DBAPI connection (including the dialect's on-connect set-up)."
    ),
    "db_client_operation_duration_seconds": "Duration of statement executions.",
}
_OPERATION_LABELS = ("db_system_name", "db_operation_name", "db_query_summary", "error_type")


def enabled() -> bool:
    """Whether this process writes multiprocess files (``PROMETHEUS_MULTIPROC_DIR`` is set)."""
    return directory() is not None


class _Values:
    """This process's value objects, one per sample, created once."""

    def __init__(self) -> None:
        self._values: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def get(
        self,
        typ: str,
        metric: str,
        sample: str,
        labelnames: Sequence[str],
        labelvalues: Sequence[str],
        help_text: str,
        mode: str = "",
    ) -> Any:
        key = (typ, sample, tuple(labelnames), tuple(labelvalues), mode)
        value = self._values.get(key)
        if value is None:
            with self._lock:
                value = self._values.get(key)
                if value is None:
                    cls = value_class()
                    value = cls(typ, metric, sample, list(labelnames), list(labelvalues),
                                help_text, multiprocess_mode=mode)  # fmt: skip
                    self._values[key] = value
        return value

    def after_fork(self) -> None:
        self._lock = threading.Lock()


_values = _Values()


class _Histogram(Histogram):
    """A histogram flushed into the files; children remember what they last wrote."""

    def __init__(self, name: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        super().__init__(name, _HISTOGRAMS[name], labelnames, buckets)
        # label values -> the count last written
        self.flushed: dict[tuple[str, ...], int] = {}

    def flush(self) -> None:
        metric = self.name
        bucket_names = (*self.labelnames, "le")
        les = [*(_go(b) for b in self.bounds), "+Inf"]
        for child in self.children():
            counts, total, _exemplars = child.snapshot()  # cumulative
            n = counts[-1]
            if self.flushed.get(child.label_values) == n:
                continue
            previous = 0
            for le, cumulative in zip(les, counts, strict=True):
                _values.get("histogram", metric, metric + "_bucket", bucket_names,
                            (*child.label_values, le), self.documentation).set(
                    float(cumulative - previous)
                )  # fmt: skip
                previous = cumulative
            _values.get("histogram", metric, metric + "_sum", self.labelnames,
                        child.label_values, self.documentation).set(total)  # fmt: skip
            self.flushed[child.label_values] = n

    def forget_parent(self) -> None:
        self.after_fork()
        for child in self.children():
            child.forget_counts()
        self.flushed = {}


def _go(bound: float) -> str:
    return floatToGoString(bound)


class _Pools:
    """The pools of this process, and the sampler job that writes them."""

    def __init__(self) -> None:
        self.trackers: list[MultiprocessTracker] = []
        self.lock = threading.Lock()
        self.flushes = 0
        self.job = Job("multiprocess", self.flush, lambda: FLUSH_INTERVAL, at_exit=True,
                       on_error=self._error)  # fmt: skip

    def add(self, tracker: MultiprocessTracker) -> None:
        with self.lock:
            self.trackers.append(tracker)
        sampler.add(self.job)

    def remove(self, tracker: MultiprocessTracker) -> None:
        with self.lock:
            if tracker in self.trackers:
                self.trackers.remove(tracker)
            empty = not self.trackers
        if empty:
            sampler.remove(self.job)

    def flush(self, _now: float) -> None:
        with self.lock:
            trackers = list(self.trackers)
        for t in trackers:
            t.flush()
        self.flushes += 1
        if self.flushes % SWEEP_EVERY == 0:
            sweep()

    def _error(self, e: BaseException) -> None:
        logger.debug("poolwatch: multiprocess flush failed", exc_info=e)

    def after_fork(self) -> None:
        self.lock = threading.Lock()
        _values.after_fork()
        for t in self.trackers:
            t.forget_parent()


_pools = _Pools()
lifecycle.after_fork_in_child(_pools.after_fork)


class MultiprocessTracker:
    """One pool's series in this process's multiprocess files."""

    def __init__(
        self,
        state: PoolState,
        labels: Mapping[str, str],
        db_system: str,
        pool_buckets: Sequence[float],
        operation_buckets: Sequence[float],
    ) -> None:
        self._state = state
        self._db_system = db_system
        extra = sorted(labels)
        self._names = (POOL_LABEL, *extra)
        self._values = (state.name, *(labels[k] for k in extra))
        names = self._names
        self._wait_h = _Histogram("db_client_connection_wait_time_seconds", names, pool_buckets)
        self._use_h = _Histogram("db_client_connection_use_time_seconds", names, pool_buckets)
        self._create_h = _Histogram(
            "db_client_connection_create_time_seconds", names, pool_buckets
        )
        self._operations = _Histogram(
            "db_client_operation_duration_seconds", (*names, *_OPERATION_LABELS),
            operation_buckets,
        )  # fmt: skip
        self._histograms = (self._wait_h, self._use_h, self._create_h, self._operations)
        self._wait = self._wait_h.labels(*self._values)
        self._use = self._use_h.labels(*self._values)
        self._create = self._create_h.labels(*self._values)
        # The hot path: the same recorders as the single-process backend.
        self.wait: Recorder = self._wait.record
        self.use: Recorder = self._use.record
        self.pending: Callable[[], int] = self._wait.pending
        self._closed = False
        self._written: set[tuple[str, tuple[str, ...], tuple[str, ...]]] = set()
        _pools.add(self)
        sampler.wake()

    def drain(self) -> None:
        self._wait.drain()
        self._use.drain()

    def _inc(self, metric: str, extra_names: Sequence[str] = (), extra: Sequence[str] = ()) -> None:
        _values.get("counter", metric, metric + "_total", (*self._names, *extra_names),
                    (*self._values, *extra), _COUNTERS[metric]).inc(1)  # fmt: skip

    def created(self, seconds: float) -> None:
        self._create.observe(seconds)

    def timed_out(self) -> None:
        self._inc("db_client_connection_timeouts")

    def connection_error(self, error_type: str) -> None:
        self._inc("poolwatch_connection_errors", ("error_type",), (error_type,))

    def invalidated(self, kind: str, reason: str) -> None:
        self._inc("poolwatch_connection_invalidations", ("kind", "reason"), (kind, reason))

    def leak_detected(self) -> None:
        self._inc("poolwatch_connection_leaks")

    def statement(self, operation: str, summary: str) -> Sink:
        return self._operations.labels(*self._values, self._db_system, operation, summary, "")

    def statement_failed(
        self, operation: str, summary: str, error_type: str, seconds: float
    ) -> None:
        self._operations.labels(
            *self._values, self._db_system, operation, summary, error_type
        ).observe(seconds)

    def summary_folded(self) -> None:
        self._inc("poolwatch_query_summaries_folded")

    def _gauge(self, metric: str, value: float, extra_names: Sequence[str] = (),
               extra: Sequence[str] = ()) -> None:  # fmt: skip
        help_text, mode = _GAUGES[metric]
        self._written.add((metric, tuple(extra_names), tuple(extra)))
        _values.get("gauge", metric, metric, (*self._names, *extra_names),
                    (*self._values, *extra), help_text, mode).set(value)  # fmt: skip

    def flush(self) -> None:
        """Write this pool's gauges and changed buckets (the sampler's job, and at exit)."""
        if self._closed:
            return
        state = self._state
        try:
            snap = state.snapshot()
        except Exception as e:
            state.errors.report("collect", e)
        else:
            lim = snap.limits
            self._gauge("db_client_connection_count", snap.used, (STATE_LABEL,), ("used",))
            self._gauge("db_client_connection_count", snap.idle, (STATE_LABEL,), ("idle",))
            for metric, limit in (("db_client_connection_max", lim.max),
                                  ("db_client_connection_idle_max", lim.idle_max),
                                  ("db_client_connection_idle_min", lim.idle_min)):  # fmt: skip
                if limit is not None:
                    self._gauge(metric, limit)
            self._gauge("db_client_connection_pending_requests", snap.pending)
            self._gauge("poolwatch_connection_wait_longest_seconds", snap.longest_wait)
            self._gauge("poolwatch_connections_leaked", snap.leaked)
            self._gauge("poolwatch_pool_info", 1, PoolLimits.INFO_LABELS,
                        tuple(lim.info().values()))  # fmt: skip
        for component, n in list(state.errors.counts.items()):
            metric = "poolwatch_instrumentation_errors"
            _values.get("counter", metric, metric + "_total", (*self._names, "component"),
                        (*self._values, component), _COUNTERS[metric]).set(n)  # fmt: skip
        for h in self._histograms:
            try:
                h.flush()
            except Exception as e:
                state.errors.report("collect", e)

    def forget_parent(self) -> None:
        # A forked child: the parent's counts stay in the parent's files; this pid starts at 0.
        for h in self._histograms:
            h.forget_parent()

    def close(self) -> None:
        """The pool is gone from this process: its last counts are written and its gauges read
        0 until the process exits (a file cannot drop a series; a dead process's files go)."""
        self.flush()
        self._closed = True
        _pools.remove(self)
        for metric, extra_names, extra in list(self._written):
            self._gauge(metric, 0, extra_names, extra)


