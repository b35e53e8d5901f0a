"""The multiprocess backend: each process writes its pools' series into prometheus_client's
multiprocess files, and any ``MultiProcessCollector`` shows the service's totals.

The hot path is the single-process backend's: waits, hold times, creations and statements are
recorded into poolwatch's own histograms (:mod:`poolwatch.backends.prometheus.histogram`: a C
bucket increment when compiled), never into a file. The process's sampler
(:mod:`poolwatch.core.sampler`) then, about once a second and at exit, writes each pool's gauges
(from :meth:`PoolState.snapshot`) and the buckets that changed. Counters of rare events
(timeouts, connection errors, invalidations, leaks) are written when they happen. Values are
absolute per process (a child starts from zero after ``fork()``), so a repeated flush is harmless.

The metrics are the catalog's (:mod:`poolwatch.core.catalog`), each aggregated across processes as
its ``aggregation`` says, in prometheus_client's multiprocess modes: ``livesum`` for what adds up
(connections used and idle, callers waiting, the limits, leaked connections), ``livemax`` for the
longest current wait, the server's limit and the info series; counters and histograms are summed
over every process that ever ran, the dead ones' from the archive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from poolwatch.backends.multiprocess.files import directory, sweep, value_class
from poolwatch.backends.prometheus.histogram import Histogram, floatToGoString
from poolwatch.core import lifecycle
from poolwatch.core.catalog import CATALOG, POOL_LABEL, Metric
from poolwatch.core.errors import logger
from poolwatch.core.sampler import Job, sampler
from poolwatch.core.settings import with_bound
from poolwatch.core.state import PoolState
from poolwatch.core.tracker import BaseTracker, Recorder, Sink

__all__ = ["FLUSH_INTERVAL", "MultiprocessTracker", "enabled"]

FLUSH_INTERVAL = 1.0
"""Seconds between two writes of a process's gauges and buckets."""
SWEEP_EVERY = 5
"""Flushes between two sweeps of dead processes' files by each live process (a safety net for
servers that have no hook when a worker dies; poolwatch's collector sweeps at every scrape)."""

# Each metric of the catalog as prometheus_client's multiprocess mode aggregates it: gauges of
# live processes summed or their maximum (``aggregation``); counters and histograms summed.
_MODE = {"sum": "livesum", "max": "livemax"}
_OBSERVED = tuple(m for m in CATALOG if m.observe is not None)
_HISTOGRAMS = {m.key: m for m in CATALOG if m.kind == "histogram"}
_COUNTERS = {m.key: m for m in CATALOG if m.kind == "counter" and m.observe is None}


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
        key = (directory(), typ, sample, tuple(labelnames), tuple(labelvalues), mode)
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

    def __init__(self, metric: Metric, base: Sequence[str], buckets: Sequence[float]) -> None:
        super().__init__(metric.prometheus, metric.help, (*base, *metric.labels), buckets)
        # label values -> the count last written
        self.flushed: dict[tuple[str, ...], int] = {}

    def flush(self) -> None:
        metric = self.name
        bucket_names = (*self.labelnames, "le")
        for child in self.children():
            les = [*(floatToGoString(b) for b in child.bounds), "+Inf"]
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


class MultiprocessTracker(BaseTracker):
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
        buckets = {"pool": pool_buckets, "operation": operation_buckets}
        h = {key: _Histogram(m, self._names, buckets[m.buckets or "pool"])
             for key, m in _HISTOGRAMS.items()}  # fmt: skip
        self._histograms = tuple(h.values())
        self._operations = h["operation_duration"]
        # As the single-process backend: a timed-out wait is recorded as the pool's timeout, a
        # bound of its own.
        self._wait = h["wait_time"].labels(
            *self._values, bounds=with_bound(pool_buckets, state.limits().timeout)
        )
        self._use = h["use_time"].labels(*self._values)
        self._create = h["create_time"].labels(*self._values)
        # The hot path: the same recorders as the single-process backend.
        self.wait: Recorder = self._wait.record
        self.use: Recorder = self._use.record
        self.pending: Callable[[], int] = self._wait.pending
        self._closed = False
        self._written: set[tuple[Metric, tuple[str, ...]]] = set()
        # Exported at 0 from the start, as the single-process backend does: increase() and the
        # alert rules need the series before the first timeout or leak.
        for key in ("timeouts", "leaks", "summaries_folded"):
            self._counter(key)
        _pools.add(self)
        sampler.wake()

    def drain(self) -> None:
        self._wait.drain()
        self._use.drain()

    def _counter(self, key: str, *extra: str) -> Any:
        m = _COUNTERS[key]
        return _values.get("counter", m.prometheus, m.prometheus + "_total",
                           (*self._names, *m.labels), (*self._values, *extra), m.help)  # fmt: skip

    def _inc(self, key: str, *extra: str) -> None:
        self._counter(key, *extra).inc(1)

    def created(self, seconds: float) -> None:
        self._create.observe(seconds)

    def timed_out(self) -> None:
        self._inc("timeouts")

    def connection_error(self, error_type: str) -> None:
        self._inc("connection_errors", error_type)

    def invalidated(self, kind: str, reason: str) -> None:
        self._inc("invalidations", kind, reason)

    def leak_detected(self) -> None:
        self._inc("leaks")

    def statement(self, operation: str, summary: str) -> Sink:
        return self._operations.labels(*self._values, self._db_system, operation, summary, "")

    def statement_failed(
        self, operation: str, summary: str, error_type: str, seconds: float
    ) -> None:
        self._operations.labels(
            *self._values, self._db_system, operation, summary, error_type
        ).observe(seconds)

    def summary_folded(self) -> None:
        self._inc("summaries_folded")

    def _write(self, m: Metric, labels: tuple[str, ...], value: float) -> None:
        if m.kind == "counter":  # counted in the pool's state (poolwatch's own errors)
            value_of = _values.get("counter", m.prometheus, m.prometheus + "_total",
                                   (*self._names, *m.labels), (*self._values, *labels), m.help)
        else:
            self._written.add((m, labels))
            value_of = _values.get("gauge", m.prometheus, m.prometheus, (*self._names, *m.labels),
                                   (*self._values, *labels), m.help, _MODE[m.aggregation])
        value_of.set(value)  # fmt: skip

    def flush(self) -> None:
        """Write this pool's gauges and changed buckets (the sampler's job, and at exit)."""
        if self._closed:
            return
        state = self._state
        try:
            snap = state.snapshot()
            for m in _OBSERVED:
                assert m.observe is not None
                for labels, value in m.observe(state, snap):
                    self._write(m, labels, value)
        except Exception as e:
            state.errors.report("collect", e)
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
        for m, labels in list(self._written):
            self._write(m, labels, 0)


