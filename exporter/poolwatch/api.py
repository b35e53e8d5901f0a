"""``instrument()``: finds the source for the object given and wires the backends to it.

This is the one module that knows every source and every backend; the core knows none.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from poolwatch.core.config import resolve_settings, tracing_enabled
from poolwatch.core.instrumentation import Instrumentation, Telemetry, TelemetryFactory
from poolwatch.core.lifecycle import is_worker_process, warn_single_process_view
from poolwatch.core.setting_values import check_objects
from poolwatch.core.settings import Settings
from poolwatch.core.state import PoolState
from poolwatch.core.tracker import PoolTracker, combine
from poolwatch.sources import source_for
from poolwatch.sources.sqlalchemy.auto import AllEngines, instrument_all

__all__ = [
    "instrument", "instrument_engine", "instrumented", "multiprocess_enabled", "telemetry_factory",
    "uninstrument",
]  # fmt: skip

def telemetry_factory(
    registry: CollectorRegistry | None, tracer_provider: Any = None, meter_provider: Any = None
) -> TelemetryFactory:
    """The backends one ``instrument()`` call asked for, built per pool."""

    def build(state: PoolState, settings: Settings, db_system: str) -> Telemetry:
        trackers: list[PoolTracker] = []
        tracing = None
        exemplar = None
        if tracing_enabled(settings.tracing, tracer_provider):
            from poolwatch.backends.otel.tracing import Tracing  # optional: opentelemetry

            tracing = Tracing(state.name, settings, tracer_provider)
            exemplar = tracing.exemplar if settings.exemplars else None
        if settings.prometheus and multiprocess_enabled():
            from poolwatch.backends.multiprocess import MultiprocessTracker

            trackers.append(
                MultiprocessTracker(state, settings.labels, db_system, settings.pool_buckets,
                                    settings.operation_buckets)
            )  # fmt: skip
        elif settings.prometheus:
            from poolwatch.backends.prometheus.metrics import PrometheusTracker, metrics_for

            metrics = metrics_for(
                registry, settings.labels, settings.pool_buckets, settings.operation_buckets
            )
            trackers.append(PrometheusTracker(metrics, state, settings.labels, db_system, exemplar))
        if meter_provider is not None:
            from poolwatch.backends.otel.metrics import OTelTracker  # optional: opentelemetry

            trackers.append(OTelTracker(meter_provider, state, settings.labels, db_system,
            settings))
        return Telemetry(
            tracker=combine(trackers),
            on_wait=tracing.on_wait if tracing is not None else None,
            tracing=tracing,
        )

    return build


def multiprocess_enabled() -> bool:
    """prometheus_client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is set."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or
                os.environ.get("prometheus_multiproc_dir"))  # fmt: skip


def _check_prefork(settings: Settings) -> None:
    if settings.prometheus and not multiprocess_enabled() and is_worker_process():
        warn_single_process_view()


def _serve(settings: Settings, registry: CollectorRegistry | None) -> None:
    if settings.port is None:
        return
    if multiprocess_enabled():
        from poolwatch.backends.multiprocess import serve_from_a_worker

        # Once for the whole service: by the master when it serves, else by one worker.
        serve_from_a_worker(settings.addr, settings.port)
        return
    from poolwatch.backends.prometheus.server import ensure_http_server

    ensure_http_server(settings.addr, settings.port, registry)


def instrument(target: Any, options: dict[str, Any], *, automatic: bool = False) -> Any:
    """``poolwatch.instrument`` without the typing sugar (see :func:`poolwatch.instrument`)."""
    given = dict(options)
    registry = given.pop("registry", None)
    providers = {k: given.pop(k, None) for k in ("tracer_provider", "meter_provider")}
    check_objects({"registry": registry, **providers})
    telemetry = telemetry_factory(registry, **providers)
    if target is None:
        resolve_settings(given)  # fail now, not at the first create_engine()
        return instrument_all(_automatic(given, telemetry, registry))
    source = source_for(target)
    if source is None:
        raise TypeError(
            f"poolwatch: instrument() takes a sqlalchemy Engine or AsyncEngine or a psycopg_pool "
            f"pool, not {type(target).__name__}"
        )
    inst: Instrumentation = source.instrument(target, given, telemetry, automatic=automatic)
    _check_prefork(inst.settings)
    _serve(inst.settings, registry)
    return inst


def _automatic(
    given: dict[str, Any], telemetry: TelemetryFactory, registry: CollectorRegistry | None
) -> Callable[[Any], Instrumentation]:
    def instrument_one(engine: Any) -> Instrumentation:
        source = source_for(engine)
        if source is None:
            raise TypeError(f"poolwatch: not a pool poolwatch knows: {type(engine).__name__}")
        inst: Instrumentation = source.instrument(engine, dict(given), telemetry, automatic=True)
        _check_prefork(inst.settings)
        _serve(inst.settings, registry)
        return inst

    return instrument_one


def instrument_engine(engine: Any, overrides: dict[str, Any]) -> Instrumentation:
    """For the URL plugin: the default registry, no providers."""
    result: Instrumentation = instrument(engine, overrides)
    return result


def uninstrument(target: Any) -> bool:
    source = source_for(target)
    return bool(source.uninstrument(target)) if source is not None else False


def instrumented(target: Any) -> Instrumentation | None:
    source = source_for(target)
    return source.instrumented(target) if source is not None else None


__all__ += ["AllEngines"]
