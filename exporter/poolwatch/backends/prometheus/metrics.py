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
from poolwatch.core.lifecycle import run_deferred
from poolwatch.core.state import PoolLimits, PoolSet, PoolState
from poolwatch.core.tracker import Recorder, Sink, immediate

__all__ = ["PrometheusMetrics", "PrometheusTracker", "histogram_families", "metrics_for"]

POOL_LABEL = "db_client_connection_pool_name"
STATE_LABEL = "db_client_connection_state"

Exemplar = Callable[[], "dict[str, str] | None"]


class PrometheusMetrics:
    """The metric objects of one registry, shared by every pool instrumented into it.

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
        self.wait_time = Histogram(
            "db_client_connection_wait_time_seconds",
            "Time from asking the pool for a connection to getting one (or timing out).",
            base, self.pool_buckets,
        )  # fmt: skip
        self.use_time = Histogram(
            "db_client_connection_use_time_seconds",
            "Time a connection was held, from checkout to checkin.",
            base, self.pool_buckets,
        )  # fmt: skip
        self.create_time = Histogram(
            "db_client_connection_create_time_seconds",
            "Time to open a new DBAPI connection (including the dialect's on-connect set-up).",
            base, self.pool_buckets,
        )  # fmt: skip
        self.operation_duration = Histogram(
            "db_client_operation_duration_seconds",
            "Duration of statement executions.",
            (*base, "db_system_name", "db_operation_name", "db_query_summary", "error_type"),
            self.operation_buckets,
        )  # fmt: skip
        self.histograms = (self.wait_time, self.use_time, self.create_time, self.operation_duration)
        # Registered before any counter: the registry collects in registration order, and this
        # collector is the one that first runs the teardown of engines the application dropped.
        registry.register(HistogramCollector(self.histograms))
        self.timeouts = Counter(
            "db_client_connection_timeouts",
            "Checkouts that gave up waiting for a connection (the pool raised its timeout error).",
            base, registry=registry,
        )  # fmt: skip
        self.connection_errors = Counter(
            "poolwatch_connection_errors",
            "Checkouts that failed with an error other than a timeout, usually because the "
            "database refused or dropped new connections.",
            (*base, "error_type"), registry=registry,
        )  # fmt: skip
        self.invalidations = Counter(
            "poolwatch_connection_invalidations",
            "Connections invalidated, by kind (hard, soft, pre_ping) and reason (exception type).",
            (*base, "kind", "reason"), registry=registry,
        )  # fmt: skip
        self.leaks = Counter(
            "poolwatch_connection_leaks",
            "Connections seen held longer than the leak threshold.",
            base, registry=registry,
        )  # fmt: skip
        self.summaries_folded = Counter(
            "poolwatch_query_summaries_folded",
            "Statements counted under db_query_summary=\"other\" because the cap was reached.",
            base, registry=registry,
        )  # fmt: skip
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


class PoolStateCollector(Collector):
    """Gauges computed from each pool's state at scrape time."""

    def __init__(self, base_labels: Sequence[str]) -> None:
        self.base_labels = list(base_labels)
        self.pools: PoolSet[tuple[str, ...]] = PoolSet()

    def describe(self) -> Iterable[Metric]:
        # Names only, so the registry can reject a clash with another collector.
        return list(self._families())

    def _families(self) -> tuple[GaugeMetricFamily | CounterMetricFamily, ...]:
        base = self.base_labels
        return (
            GaugeMetricFamily(
                "db_client_connection_count",
                "Connections open now, by state (used = checked out, idle = open in the pool).",
                labels=[*base, STATE_LABEL],
            ),
            GaugeMetricFamily(
                "db_client_connection_max",
                "Most connections the pool may open (QueuePool: pool_size + max_overflow).",
                labels=base,
            ),
            GaugeMetricFamily(
                "db_client_connection_idle_max",
                "Most idle connections the pool keeps (QueuePool: pool_size).",
                labels=base,
            ),
            GaugeMetricFamily(
                "db_client_connection_idle_min",
                "Fewest idle connections the pool keeps (psycopg_pool: min_size).",
                labels=base,
            ),
            GaugeMetricFamily(
                "db_client_connection_pending_requests",
                "Callers waiting for a connection right now.",
                labels=base,
            ),
            GaugeMetricFamily(
                "poolwatch_connection_wait_longest_seconds",
                "How long the caller that has waited longest so far has been waiting (0 if none).",
                labels=base,
            ),
            GaugeMetricFamily(
                "poolwatch_connections_leaked",
                "Connections checked out for longer than the leak threshold right now.",
                labels=base,
            ),
            GaugeMetricFamily(
                "poolwatch_pool_info",
                "The pool's configuration (value is always 1).",
                labels=[*base, *PoolLimits.INFO_LABELS],
            ),
            CounterMetricFamily(
                "poolwatch_instrumentation_errors",
                "Errors inside poolwatch itself, by component; the application was not affected.",
                labels=[*base, "component"],
            ),
        )

    def collect(self) -> Iterable[Metric]:
        run_deferred()  # a scrape is a safe point to drop the series of collected engines
        families = self._families()
        count, cmax, idle_max, idle_min, pending, longest, leaked, info, errors = families
        for state, values in self.pools.items():
            try:
                snap = state.snapshot()
            except Exception as e:
                state.errors.report("collect", e)
            else:
                lim = snap.limits
                count.add_metric([*values, "used"], snap.used)
                count.add_metric([*values, "idle"], snap.idle)
                if lim.max is not None:
                    cmax.add_metric(list(values), lim.max)
                if lim.idle_max is not None:
                    idle_max.add_metric(list(values), lim.idle_max)
                if lim.idle_min is not None:
                    idle_min.add_metric(list(values), lim.idle_min)
                pending.add_metric(list(values), snap.pending)
                longest.add_metric(list(values), snap.longest_wait)
                leaked.add_metric(list(values), snap.leaked)
                info.add_metric([*values, *lim.info().values()], 1)
            for component, n in list(state.errors.counts.items()):
                errors.add_metric([*values, component], n)
        return list(families)


class PrometheusTracker:
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
        self._wait = metrics.wait_time.labels(*values)
        self._use = metrics.use_time.labels(*values)
        self._create = metrics.create_time.labels(*values)
        self._timeouts = metrics.timeouts.labels(*values)
        self._leaks = metrics.leaks.labels(*values)
        self._folded = metrics.summaries_folded.labels(*values)
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
        self._m.connection_errors.labels(*self._values, error_type).inc()

    def invalidated(self, kind: str, reason: str) -> None:
        self._m.invalidations.labels(*self._values, kind, reason).inc()

    def leak_detected(self) -> None:
        self._leaks.inc()

    def statement(self, operation: str, summary: str) -> Sink:
        child = self._m.operation_duration.labels(
            *self._values, self._db_system, operation, summary, ""
        )
        return self._with_exemplar(child)

    def statement_failed(
        self, operation: str, summary: str, error_type: str, seconds: float
    ) -> None:
        child = self._m.operation_duration.labels(
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
        for counter in (m.timeouts, m.connection_errors, m.invalidations, m.leaks,
                        m.summaries_folded):  # fmt: skip
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
        for counter in (m.timeouts, m.connection_errors, m.invalidations, m.leaks,
                        m.summaries_folded):  # fmt: skip
            children: list[Any] = list(counter._metrics.values())
            for counter_child in children:
                counter_child.reset()
    lifecycle.warn_single_process_view()


lifecycle.after_fork_in_child(_after_fork_in_child)
