"""OpenTelemetry metrics backend: the same instruments, through a ``MeterProvider``.

Instrument names, units and attributes are the semantic conventions' (``db.client.connection.*``,
``db.client.operation.duration``), chosen so that an OpenTelemetry-to-Prometheus exporter produces
exactly the contract's Prometheus names: one dashboard serves both paths. poolwatch's own
instruments are named ``poolwatch.*`` and use the Prometheus label names as attribute names.

Instruments belong to one meter per provider and are shared by every pool instrumented into it
(the SDK returns the first instrument for a repeated name, and ignores the second one's
callbacks). Gauges are observable instruments whose callbacks read each pool's
:class:`~poolwatch.core.state.PoolState`, so the hot path never updates a gauge; recorders are
``record`` methods with the pool's attributes bound once.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from poolwatch.core import lifecycle
from poolwatch.core.config import Settings
from poolwatch.core.errors import logger
from poolwatch.core.lifecycle import run_deferred
from poolwatch.core.state import PoolSet, PoolSnapshot, PoolState
from poolwatch.core.tracker import NOTHING_PENDING, Recorder, Sink, immediate
from poolwatch.core.version import __version__

__all__ = ["INSTRUMENTS", "OTelMetrics", "OTelTracker", "otel_metrics_for"]

POOL = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
ERROR_TYPE = "error.type"
METER_NAME = "poolwatch"

# OpenTelemetry name -> (kind, unit). The units give the Prometheus suffixes: "s" -> _seconds,
# "{...}" annotations -> nothing; monotonic sums get _total.
INSTRUMENTS: Mapping[str, tuple[str, str]] = {
    "db.client.connection.count": ("observable_up_down_counter", "{connection}"),
    "db.client.connection.max": ("observable_up_down_counter", "{connection}"),
    "db.client.connection.idle.max": ("observable_up_down_counter", "{connection}"),
    "db.client.connection.idle.min": ("observable_up_down_counter", "{connection}"),
    "db.client.connection.pending_requests": ("observable_up_down_counter", "{request}"),
    "db.client.connection.timeouts": ("counter", "{timeout}"),
    "db.client.connection.wait_time": ("histogram", "s"),
    "db.client.connection.use_time": ("histogram", "s"),
    "db.client.connection.create_time": ("histogram", "s"),
    "db.client.operation.duration": ("histogram", "s"),
    "poolwatch.connection.errors": ("counter", "{error}"),
    "poolwatch.connection.invalidations": ("counter", "{invalidation}"),
    "poolwatch.connection.leaks": ("counter", "{leak}"),
    "poolwatch.query_summaries.folded": ("counter", "{statement}"),
    "poolwatch.connection.wait_longest": ("observable_gauge", "s"),
    "poolwatch.connections.leaked": ("observable_up_down_counter", "{connection}"),
    "poolwatch.pool.info": ("observable_gauge", ""),
    "poolwatch.instrumentation.errors": ("observable_counter", "{error}"),
}

_DESCRIPTIONS: Mapping[str, str] = {
    "db.client.connection.count": "Connections open now, by state (used = checked out, idle = "
    "open in the pool).",
    "db.client.connection.max": "Most connections the pool may open (QueuePool: pool_size + "
    "max_overflow).",
    "db.client.connection.idle.max": "Most idle connections the pool keeps (QueuePool: pool_size).",
    "db.client.connection.idle.min": "Fewest idle connections the pool keeps (psycopg_pool: "
    "min_size).",
    "db.client.connection.pending_requests": "Callers waiting for a connection right now.",
    "db.client.connection.timeouts": "Checkouts that gave up waiting for a connection (the pool "
    "raised its timeout error).",
    "db.client.connection.wait_time": "Time from asking the pool for a connection to getting "
    "one (or timing out).",
    "db.client.connection.use_time": "Time a connection was held, from checkout to checkin.",
    "db.client.connection.create_time": "Time to open a new DBAPI connection (including the "
    "dialect's on-connect set-up).",
    "db.client.operation.duration": "Duration of statement executions.",
    "poolwatch.connection.errors": "Checkouts that failed with an error other than a timeout, "
    "usually because the database refused or dropped new connections.",
    "poolwatch.connection.invalidations": "Connections invalidated, by kind (hard, soft, "
    "pre_ping) and reason (exception type).",
    "poolwatch.connection.leaks": "Connections seen held longer than the leak threshold.",
    "poolwatch.query_summaries.folded": 'Statements counted under db_query_summary="other" '
    "because the cap was reached.",
    "poolwatch.connection.wait_longest": "How long the caller that has waited longest so far has "
    "been waiting (0 if none).",
    "poolwatch.connections.leaked": "Connections checked out for longer than the leak threshold "
    "right now.",
    "poolwatch.pool.info": "The pool's configuration (value is always 1).",
    "poolwatch.instrumentation.errors": "Errors inside poolwatch itself, by component; the "
    "application was not affected.",
}



class OTelMetrics:
    """The instruments of one meter provider, shared by every pool instrumented into it.

    Histogram buckets are fixed by the first pool (as with one Prometheus registry).
    """

    def __init__(
        self,
        meter_provider: MeterProvider,
        pool_buckets: Sequence[float],
        operation_buckets: Sequence[float],
    ) -> None:
        self.pools: PoolSet[dict[str, Any]] = PoolSet()
        meter = meter_provider.get_meter(METER_NAME, __version__)

        def unit(name: str) -> str:
            return INSTRUMENTS[name][1]

        def histogram(name: str, buckets: Sequence[float]) -> Any:
            return meter.create_histogram(
                name, unit=unit(name), description=_DESCRIPTIONS[name],
                explicit_bucket_boundaries_advisory=list(buckets),
            )  # fmt: skip

        def counter(name: str) -> Any:
            return meter.create_counter(name, unit=unit(name), description=_DESCRIPTIONS[name])

        self.wait_time = histogram("db.client.connection.wait_time", pool_buckets)
        self.use_time = histogram("db.client.connection.use_time", pool_buckets)
        self.create_time = histogram("db.client.connection.create_time", pool_buckets)
        self.operation_duration = histogram("db.client.operation.duration", operation_buckets)
        self.timeouts = counter("db.client.connection.timeouts")
        self.connection_errors = counter("poolwatch.connection.errors")
        self.invalidations = counter("poolwatch.connection.invalidations")
        self.leaks = counter("poolwatch.connection.leaks")
        self.summaries_folded = counter("poolwatch.query_summaries.folded")

        observers: dict[str, Callable[[PoolSnapshot, dict[str, Any]], Iterable[Observation]]] = {
            "db.client.connection.count": _count,
            "db.client.connection.max": _limit("max"),
            "db.client.connection.idle.max": _limit("idle_max"),
            "db.client.connection.idle.min": _limit("idle_min"),
            "db.client.connection.pending_requests": lambda s, a: [Observation(s.pending, a)],
            "poolwatch.connection.wait_longest": lambda s, a: [Observation(s.longest_wait, a)],
            "poolwatch.connections.leaked": lambda s, a: [Observation(s.leaked, a)],
            "poolwatch.pool.info": _info,
        }
        for name, observe in observers.items():
            create = getattr(meter, "create_" + INSTRUMENTS[name][0])
            create(
                name, callbacks=[self._callback(observe)], unit=unit(name),
                description=_DESCRIPTIONS[name],
            )  # fmt: skip
        meter.create_observable_counter(
            "poolwatch.instrumentation.errors",
            callbacks=[self._errors],
            unit=unit("poolwatch.instrumentation.errors"),
            description=_DESCRIPTIONS["poolwatch.instrumentation.errors"],
        )


    def _callback(
        self, observe: Callable[[PoolSnapshot, dict[str, Any]], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            run_deferred()  # an export is a safe point to drop collected engines (lifecycle.py)
            out: list[Observation] = []
            for state, attributes in self.pools.items():
                try:
                    out.extend(observe(state.snapshot(), attributes))
                except Exception as e:  # a broken pool must not break the export
                    state.errors.report("collect", e)
            return out

        return callback

    def _errors(self, _options: CallbackOptions) -> Iterable[Observation]:
        out: list[Observation] = []
        for state, attributes in self.pools.items():
            for component, n in list(state.errors.counts.items()):
                out.append(Observation(n, {**attributes, "component": component}))
        return out


def _count(snap: PoolSnapshot, attributes: dict[str, Any]) -> list[Observation]:
    # One snapshot for both states, so used + idle is the pool's open connections.
    return [
        Observation(snap.used, {**attributes, STATE: "used"}),
        Observation(snap.idle, {**attributes, STATE: "idle"}),
    ]


def _limit(field: str) -> Callable[[PoolSnapshot, dict[str, Any]], list[Observation]]:
    def observe(snap: PoolSnapshot, attributes: dict[str, Any]) -> list[Observation]:
        value = getattr(snap.limits, field)
        return [] if value is None else [Observation(value, attributes)]  # absent when unbounded

    return observe


def _info(snap: PoolSnapshot, attributes: dict[str, Any]) -> list[Observation]:
    return [Observation(1, {**attributes, **snap.limits.info()})]


_metrics_lock = threading.Lock()
_by_provider: weakref.WeakKeyDictionary[Any, OTelMetrics] = weakref.WeakKeyDictionary()


def otel_metrics_for(
    meter_provider: MeterProvider,
    pool_buckets: Sequence[float],
    operation_buckets: Sequence[float],
) -> OTelMetrics:
    with _metrics_lock:
        existing = _by_provider.get(meter_provider)
        if existing is None:
            existing = OTelMetrics(meter_provider, pool_buckets, operation_buckets)
            _by_provider[meter_provider] = existing
        return existing


class OTelTracker:
    """One pool's view of an :class:`OTelMetrics`: attributes resolved once per series.

    OpenTelemetry cannot delete a series: after ``close()`` the gauges stop reporting the pool,
    while its counters and histograms keep their last cumulative values until the provider is
    shut down.
    """

    def __init__(
        self,
        meter_provider: MeterProvider,
        state: PoolState,
        labels: Mapping[str, str],
        db_system: str,
        settings: Settings,
    ) -> None:
        m = otel_metrics_for(meter_provider, settings.pool_buckets, settings.operation_buckets)
        self._m = m
        self._state = state
        self._db_system = db_system
        # Never mutated after this point: the SDK keeps a reference to the attributes it sees.
        attrs: dict[str, Any] = {POOL: state.name, **labels}
        self._attrs = attrs
        self.wait: Recorder = partial(m.wait_time.record, attributes=attrs)
        self.use: Recorder = partial(m.use_time.record, attributes=attrs)
        self.pending = NOTHING_PENDING  # the SDK aggregates each value as it is recorded
        self._create: Recorder = partial(m.create_time.record, attributes=attrs)
        # Start these counters at 0, as the Prometheus backend does: increase() and alert rules
        # need the series before the first timeout or leak.
        for counter in (m.timeouts, m.leaks, m.summaries_folded):
            counter.add(0, attrs)
        m.pools.add(state, attrs)
        _trackers.add(self)

    def drain(self) -> None:
        pass

    def created(self, seconds: float) -> None:
        self._create(seconds)

    def timed_out(self) -> None:
        self._m.timeouts.add(1, self._attrs)

    def connection_error(self, error_type: str) -> None:
        self._m.connection_errors.add(1, {**self._attrs, ERROR_TYPE: error_type})

    def invalidated(self, kind: str, reason: str) -> None:
        self._m.invalidations.add(1, {**self._attrs, "kind": kind, "reason": reason})

    def leak_detected(self) -> None:
        self._m.leaks.add(1, self._attrs)

    def _statement_attrs(self, operation: str, summary: str) -> dict[str, Any]:
        attrs: dict[str, Any] = {**self._attrs, "db.system.name": self._db_system}
        if operation:  # "other" has no operation; Prometheus exports it empty, i.e. absent
            attrs["db.operation.name"] = operation
        attrs["db.query.summary"] = summary
        return attrs

    def statement(self, operation: str, summary: str) -> Sink:
        return immediate(
            partial(
                self._m.operation_duration.record,
                attributes=self._statement_attrs(operation, summary),
            )
        )

    def statement_failed(
        self, operation: str, summary: str, error_type: str, seconds: float
    ) -> None:
        attrs = self._statement_attrs(operation, summary)
        attrs[ERROR_TYPE] = error_type
        self._m.operation_duration.record(seconds, attrs)

    def summary_folded(self) -> None:
        self._m.summaries_folded.add(1, self._attrs)

    def close(self) -> None:
        self._m.pools.remove(self._state)


_trackers: weakref.WeakSet[OTelTracker] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A ``MeterProvider`` made before ``fork()`` is unsupported in the child: it carries the
    parent's cumulative values and its resource (the same ``service.instance.id``) into every
    worker, so each exports the parent's counts again as its own under one identity. poolwatch
    cannot re-create the application's readers and exporters; it says what to do instead."""
    if not list(_trackers):
        return
    logger.warning(
        "poolwatch: instrument(meter_provider=...) was called before this process was forked: "
        "OpenTelemetry metrics from a provider made in the parent are unsupported in a worker "
        "(each worker would export the parent's values under the same service.instance.id). "
        "Make the MeterProvider in each worker, after the fork (gunicorn post_fork, Celery "
        "worker_process_init), with a per-worker service.instance.id, and instrument there "
        "(README, 'Pre-fork servers')"
    )


lifecycle.after_fork_in_child(_after_fork_in_child)
