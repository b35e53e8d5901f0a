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
from poolwatch.core.catalog import CATALOG, Metric
from poolwatch.core.config import Settings, with_bound
from poolwatch.core.errors import logger
from poolwatch.core.lifecycle import run_deferred
from poolwatch.core.state import PoolSet, PoolState
from poolwatch.core.tracker import BaseTracker, Recorder, Sink, immediate
from poolwatch.core.version import __version__
from poolwatch.sql.error_types import CONNECTION_ERROR_TYPES

__all__ = ["INSTRUMENTS", "OTelMetrics", "OTelTracker", "otel_metrics_for"]

POOL = "db.client.connection.pool.name"
ERROR_TYPE = "error.type"
METER_NAME = "poolwatch"

# The catalog's metrics by OpenTelemetry name.
INSTRUMENTS: Mapping[str, Metric] = {m.otel: m for m in CATALOG}


class OTelMetrics:
    """The instruments of one meter provider, shared by every pool instrumented into it.

    Histogram buckets are fixed by the first pool (as with one Prometheus registry).
    """

    def __init__(
        self,
        meter_provider: MeterProvider,
        pool_buckets: Sequence[float],
        operation_buckets: Sequence[float],
        timeout: float | None = None,
    ) -> None:
        self.pools: PoolSet[dict[str, Any]] = PoolSet()
        meter = meter_provider.get_meter(METER_NAME, __version__)

        buckets = {"pool": pool_buckets, "operation": operation_buckets}
        self.instrument: dict[str, Any] = {}
        for m in CATALOG:
            if m.otel_instrument == "histogram":
                bounds = buckets[m.buckets or "pool"]
                if m.key == "wait_time":
                    # Bucket advice is per instrument, not per pool: the first pool's timeout
                    # (the Prometheus backend gives every pool its own).
                    bounds = with_bound(bounds, timeout)
                self.instrument[m.key] = meter.create_histogram(
                    m.otel, unit=m.unit, description=m.help,
                    explicit_bucket_boundaries_advisory=list(bounds),
                )  # fmt: skip
            elif m.otel_instrument == "counter":
                self.instrument[m.key] = meter.create_counter(
                    m.otel, unit=m.unit, description=m.help
                )
            else:
                create = getattr(meter, "create_" + m.otel_instrument)
                create(
                    m.otel, callbacks=[self._callback(m)], unit=m.unit, description=m.help
                )

    def _callback(self, metric: Metric) -> Callable[[CallbackOptions], Iterable[Observation]]:
        observe = metric.observe
        assert observe is not None
        names = [_attribute(label) for label in metric.labels]

        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            run_deferred()  # an export is a safe point to drop collected engines (lifecycle.py)
            out: list[Observation] = []
            for state, attributes in self.pools.items():
                try:
                    for values, value in observe(state, state.snapshot()):
                        labelled = dict(zip(names, values, strict=True))
                        out.append(Observation(value, {**attributes, **labelled}))
                except Exception as e:  # a broken pool must not break the export
                    state.errors.report("collect", e)
            return out

        return callback


def _attribute(label: str) -> str:
    """The semantic conventions' attribute for a Prometheus label; poolwatch's own labels keep
    their Prometheus names."""
    return _ATTRIBUTES.get(label, label)


_ATTRIBUTES = {
    "db_client_connection_state": "db.client.connection.state",
    "db_system_name": "db.system.name",
    "db_operation_name": "db.operation.name",
    "db_query_summary": "db.query.summary",
    "error_type": "error.type",
}


_metrics_lock = threading.Lock()
_by_provider: weakref.WeakKeyDictionary[Any, OTelMetrics] = weakref.WeakKeyDictionary()


def otel_metrics_for(
    meter_provider: MeterProvider,
    pool_buckets: Sequence[float],
    operation_buckets: Sequence[float],
    timeout: float | None = None,
) -> OTelMetrics:
    with _metrics_lock:
        existing = _by_provider.get(meter_provider)
        if existing is None:
            existing = OTelMetrics(meter_provider, pool_buckets, operation_buckets, timeout)
            _by_provider[meter_provider] = existing
        return existing


class OTelTracker(BaseTracker):
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
        m = otel_metrics_for(
            meter_provider,
            settings.pool_buckets,
            settings.operation_buckets,
            state.limits().timeout,
        )
        self._m = m
        self._state = state
        self._db_system = db_system
        # Never mutated after this point: the SDK keeps a reference to the attributes it sees.
        attrs: dict[str, Any] = {POOL: state.name, **labels}
        self._attrs = attrs
        self.wait: Recorder = partial(m.instrument["wait_time"].record, attributes=attrs)
        self.use: Recorder = partial(m.instrument["use_time"].record, attributes=attrs)
        self._create: Recorder = partial(m.instrument["create_time"].record, attributes=attrs)
        # Start these counters at 0, as the Prometheus backend does: increase() and alert rules
        # need the series before the first timeout or leak.
        for key in ("timeouts", "leaks", "summaries_folded"):
            m.instrument[key].add(0, attrs)
        for error_type in CONNECTION_ERROR_TYPES:  # as the Prometheus backend, for increase()
            m.instrument["connection_errors"].add(0, {**attrs, ERROR_TYPE: error_type})
        m.pools.add(state, attrs)
        _trackers.add(self)

    def created(self, seconds: float) -> None:
        self._create(seconds)

    def timed_out(self) -> None:
        self._m.instrument["timeouts"].add(1, self._attrs)

    def connection_error(self, error_type: str) -> None:
        self._m.instrument["connection_errors"].add(1, {**self._attrs, ERROR_TYPE: error_type})

    def invalidated(self, kind: str, reason: str) -> None:
        self._m.instrument["invalidations"].add(1, {**self._attrs, "kind": kind, "reason": reason})

    def leak_detected(self) -> None:
        self._m.instrument["leaks"].add(1, self._attrs)

    def _statement_attrs(self, operation: str, summary: str) -> dict[str, Any]:
        attrs: dict[str, Any] = {**self._attrs, "db.system.name": self._db_system}
        if operation:  # "other" has no operation; Prometheus exports it empty, i.e. absent
            attrs["db.operation.name"] = operation
        attrs["db.query.summary"] = summary
        return attrs

    def statement(self, operation: str, summary: str) -> Sink:
        return immediate(
            partial(
                self._m.instrument["operation_duration"].record,
                attributes=self._statement_attrs(operation, summary),
            )
        )

    def statement_failed(
        self, operation: str, summary: str, error_type: str, seconds: float
    ) -> None:
        attrs = self._statement_attrs(operation, summary)
        attrs[ERROR_TYPE] = error_type
        self._m.instrument["operation_duration"].record(seconds, attrs)

    def summary_folded(self) -> None:
        self._m.instrument["summaries_folded"].add(1, self._attrs)

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
        "worker_process_init, uWSGI uwsgidecorators.postfork), with a per-worker "
        "service.instance.id, and instrument there "
        "(README, 'Pre-fork servers')"
    )


lifecycle.after_fork_in_child(_after_fork_in_child)
