"""Prometheus backend: the contract's metric names on a prometheus_client registry.

Counters are prometheus_client's own metric objects; the four histograms are poolwatch's own
(:mod:`poolwatch.backends.prometheus.histogram`: cheaper to observe and to expose, still registered
in the registry).
Each pool's label children are resolved once. Gauges are produced at scrape time by a collector
that reads each pool's :class:`~poolwatch.core.state.PoolState`, so the hot path never updates a
gauge.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from poolwatch.backends.prometheus.histogram import Histogram, HistogramChild, HistogramCollector
from poolwatch.core import lifecycle
from poolwatch.core.catalog import CATALOG, POOL_LABEL
from poolwatch.core.lifecycle import run_deferred
from poolwatch.core.settings import with_bound
from poolwatch.core.state import PoolSet, PoolState
from poolwatch.core.tracker import BaseTracker, Recorder, Sink, immediate
from poolwatch.sql.error_types import CONNECTION_ERROR_TYPES

__all__ = ["PrometheusMetrics", "PrometheusTracker", "histogram_families", "metrics_for"]


Exemplar = Callable[[], "dict[str, str] | None"]


class PrometheusMetrics:
    """The metric objects of one registry, shared by every pool instrumented into it, made from
    :data:`poolwatch.core.catalog.CATALOG`.

    Label names are fixed when the first pool is instrumented into a registry: later pools may
    leave a user label out (it is exported empty, which Prometheus treats as absent) but may not
    add a new one.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        extra_labels: Sequence[str],
        pool_buckets: Sequence[float],
        operation_buckets: Sequence[float],
    ) -> None:
        self.registry = registry
        self.extra_labels = tuple(extra_labels)
        self.pool_buckets = tuple(pool_buckets)
        self.operation_buckets = tuple(operation_buckets)
        base = (POOL_LABEL, *self.extra_labels)
        self.base_labels = base
        buckets = {"pool": self.pool_buckets, "operation": self.operation_buckets}
        self.histogram: dict[str, Histogram] = {
            m.key: Histogram(m.prometheus, m.help, (*base, *m.labels), buckets[m.buckets or "pool"])
            for m in CATALOG
            if m.kind == "histogram"
        }
        self.histograms = tuple(self.histogram.values())
        # Registered before any counter: the registry collects in registration order, and this
        # collector is the one that first runs the teardown of engines the application dropped.
        registry.register(HistogramCollector(self.histograms))
        self.counter: dict[str, Counter] = {
            m.key: Counter(m.prometheus, m.help, (*base, *m.labels), registry=registry)
            for m in CATALOG
            if m.kind == "counter" and m.observe is None
        }
        self.collector = PoolStateCollector(self.base_labels)
        registry.register(self.collector)

    def label_values(self, name: str, labels: Mapping[str, str]) -> tuple[str, ...]:
        unknown = set(labels) - set(self.extra_labels)
        if unknown:
            raise ValueError(
                f"poolwatch: labels={dict(labels)!r} adds label(s) {sorted(unknown)} that the "
                "pools "
                f"already instrumented into this registry do not have ({list(self.extra_labels)}); "
                "labels accepts the same label names for every pool of one registry (values may "
                "differ, and a name may be left out)"
            )
        return (name, *(labels.get(k, "") for k in self.extra_labels))


_metrics_lock = threading.Lock()
_metrics: weakref.WeakKeyDictionary[CollectorRegistry, PrometheusMetrics] = (
    weakref.WeakKeyDictionary()
)


def histogram_families(registry: CollectorRegistry) -> tuple[Histogram, ...]:
    """poolwatch's histograms registered in ``registry`` (for :mod:`poolwatch.exposition`)."""
    with _metrics_lock:
        metrics = _metrics.get(registry)
    return metrics.histograms if metrics is not None else ()


def metrics_for(
    registry: CollectorRegistry | None,
    extra_labels: Iterable[str],
    pool_buckets: Sequence[float],
    operation_buckets: Sequence[float],
) -> PrometheusMetrics:
    reg = REGISTRY if registry is None else registry
    with _metrics_lock:
        existing = _metrics.get(reg)
        if existing is None:
            existing = PrometheusMetrics(reg, sorted(extra_labels), pool_buckets, operation_buckets)
            _metrics[reg] = existing
        return existing


_OBSERVED = tuple(m for m in CATALOG if m.observe is not None)


class PoolStateCollector(Collector):
    """The catalog's gauges (and the counters kept in pool state), read at scrape time."""

    def __init__(self, base_labels: Sequence[str]) -> None:
        self.base_labels = list(base_labels)
        self.pools: PoolSet[tuple[str, ...]] = PoolSet()

    def describe(self) -> Iterable[Metric]:
        # Names only, so the registry can reject a clash with another collector.
        return list(self._families())

    def _families(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        base = self.base_labels
        return [
            (CounterMetricFamily if m.kind == "counter" else GaugeMetricFamily)(
                m.prometheus, m.help, labels=[*base, *m.labels]
            )
            for m in _OBSERVED
        ]

    def collect(self) -> Iterable[Metric]:
        run_deferred()  # a scrape is a safe point to drop the series of collected engines
        families = self._families()
        for state, values in self.pools.items():
            try:
                snap = state.snapshot()
                observed = [list(m.observe(state, snap)) for m in _OBSERVED]  # type: ignore[misc]
            except Exception as e:
                state.errors.report("collect", e)
                continue
            for family, samples in zip(families, observed, strict=True):
                for labels, value in samples:
                    family.add_metric([*values, *labels], value)
        return families


class PrometheusTracker(BaseTracker):
    """One pool's view of a :class:`PrometheusMetrics`: children resolved once."""

    def __init__(
        self,
        metrics: PrometheusMetrics,
        state: PoolState,
        labels: Mapping[str, str],
        db_system: str,
        exemplar: Exemplar | None = None,
    ) -> None:
        self._m = metrics
        self._state = state
        self._values = metrics.label_values(state.name, labels)
        self._db_system = db_system
        self._exemplar = exemplar
        values = self._values
        h, c = metrics.histogram, metrics.counter
        # A timed-out wait is recorded as the pool's timeout: with the timeout as a bound of its
        # own, no quantile of this pool's waits reads above it, whatever the buckets.
        self._wait = h["wait_time"].labels(
            *values, bounds=with_bound(metrics.pool_buckets, state.limits().timeout)
        )
        self._use = h["use_time"].labels(*values)
        self._create = h["create_time"].labels(*values)
        self._operation = h["operation_duration"]
        self._timeouts = c["timeouts"].labels(*values)
        self._leaks = c["leaks"].labels(*values)
        self._folded = c["summaries_folded"].labels(*values)
        self._errors = c["connection_errors"]
        # Every connection-failure type at 0 from the start: increase() cannot count a series'
        # first sample, and the first refusal by a full server must page.
        for error_type in CONNECTION_ERROR_TYPES:
            self._errors.labels(*values, error_type)
        self._invalidations = c["invalidations"]
        # Compiled, each recorder counts at once and ``pending`` is NOTHING_PENDING. Interpreted,
        # each is a bare ``deque.append``; the listeners drain both queues when ``pending``, the
        # waits, passes PENDING_LIMIT (uses never outnumber them by more than the connections
        # checked out at the last drain).
        self.wait: Recorder = self._wait.record
        self.use: Recorder = self._use.record
        self.pending = self._wait.pending
        if exemplar is not None:
            # With tracing on, observations carry the current trace id: the immediate path.
            self.wait = self._with_exemplar(self._wait).record
            self.use = self._use.observe
        metrics.collector.pools.add(state, values)

    def drain(self) -> None:
        self._wait.drain()
        self._use.drain()

    def _with_exemplar(self, child: HistogramChild) -> Sink:
        observe, exemplar = child.observe, self._exemplar
        if exemplar is None:
            return child

        def record(seconds: float) -> None:
            observe(seconds, exemplar())

        return immediate(record)

    def created(self, seconds: float) -> None:
        self._create.observe(seconds)

    def timed_out(self) -> None:
        self._timeouts.inc()

    def connection_error(self, error_type: str) -> None:
        self._errors.labels(*self._values, error_type).inc()

    def invalidated(self, kind: str, reason: str) -> None:
        self._invalidations.labels(*self._values, kind, reason).inc()

    def leak_detected(self) -> None:
        self._leaks.inc()

    def statement(self, operation: str, summary: str) -> Sink:
        child = self._operation.labels(
            *self._values, self._db_system, operation, summary, ""
        )
        return self._with_exemplar(child)

    def statement_failed(
        self, operation: str, summary: str, error_type: str, seconds: float
    ) -> None:
        child = self._operation.labels(
            *self._values, self._db_system, operation, summary, error_type
        )
        ex = self._exemplar() if self._exemplar is not None else None
        child.observe(seconds, ex)

    def summary_folded(self) -> None:
        self._folded.inc()

    def close(self) -> None:
        m = self._m
        m.collector.pools.remove(self._state)
        mine = dict(zip(m.base_labels, self._values, strict=True))
        for histogram in m.histograms:
            histogram.remove_matching(mine)
        for counter in m.counter.values():
            _remove_matching(counter, mine)


def _remove_matching(metric: Any, labels: Mapping[str, str]) -> None:
    if hasattr(metric, "remove_by_labels"):  # prometheus_client >= 0.22: partial matches
        metric.remove_by_labels(dict(labels))
        return
    names = metric._labelnames
    with metric._lock:
        for key in list(metric._metrics):
            if all(key[names.index(k)] == v for k, v in labels.items()):
                del metric._metrics[key]


def _after_fork_in_child() -> None:
    """A child forked after pools were instrumented (``--preload``, Celery prefork) without
    multiprocess mode: its counts start from zero (the parent's are the parent's, and counting
    them in every child would count them once per worker), and it says that its numbers are one
    worker's, not the service's."""
    global _metrics_lock
    # Only this thread exists in the child: a lock another thread held at the fork stays held.
    _metrics_lock = threading.Lock()
    all_metrics = list(_metrics.values())
    if not any(m.collector.pools.items() for m in all_metrics):
        return
    for m in all_metrics:
        for histogram in m.histograms:
            histogram.after_fork()
            for child in histogram.children():
                child.forget_counts()
        for counter in m.counter.values():
            children: list[Any] = list(counter._metrics.values())
            for counter_child in children:
                counter_child.reset()
    lifecycle.warn_single_process_view()


lifecycle.after_fork_in_child(_after_fork_in_child)
