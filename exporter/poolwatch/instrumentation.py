"""``instrument()`` and the handle it returns."""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine

from .config import Settings, resolve_settings, tracing_enabled
from .guard import logger
from .leaks import LeakDetector
from .lifecycle import defer, run_deferred
from .naming import NameRegistry, db_system_name, default_pool_name
from .prometheus import PrometheusTracker, metrics_for
from .server import ensure_http_server
from .sqlalchemy_pool import PoolInstrumentation
from .state import PoolState
from .statements import StatementInstrumentation
from .tracker import PoolTracker, combine

__all__ = ["Instrumentation", "instrument_engine", "instrumented", "uninstrument_engine"]

_lock = threading.RLock()
_names = NameRegistry()
# Process-wide, as the metric contract requires names unique within a process.
_NAME_SCOPE = 0
_instrumented: weakref.WeakKeyDictionary[Engine, Instrumentation] = weakref.WeakKeyDictionary()
_warned_multiprocess = False


class Instrumentation:
    """What ``instrument(engine)`` returns. ``uninstrument()`` removes exactly what was added."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        registry: CollectorRegistry | None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        automatic: bool = False,
    ) -> None:
        self.settings = settings
        self.automatic = automatic
        explicit = settings.name is not None
        wanted = settings.name if settings.name is not None else default_pool_name(engine.url)
        self.name = _names.claim(_NAME_SCOPE, wanted, explicit=explicit)
        self._active = True
        try:
            self.state = PoolState(self.name)
            self.tracker, on_wait, tracing = self._build_backends(
                engine, settings, registry, tracer_provider, meter_provider
            )
            self._tracing = tracing
            leaks = (
                LeakDetector(
                    self.state, self.tracker, settings.leak_threshold, stacks=settings.leak_stacks
                )
                if settings.leak_threshold is not None
                else None
            )
            self._leaks = leaks
            self._pool = PoolInstrumentation(
                engine, self.state, self.tracker, leaks=leaks, on_wait=on_wait
            )
            self._statements = (
                StatementInstrumentation(
                    engine.dialect,
                    self.state,
                    self.tracker,
                    max_summaries=settings.max_query_summaries,
                    slow_threshold=settings.slow_query_threshold,
                )
                if settings.statement_metrics
                else None
            )
        except BaseException:
            _names.release(_NAME_SCOPE, self.name)
            raise
        self._pool.install()
        if self._statements is not None:
            self._statements.install()
        if tracing is not None:
            tracing.install(engine, self._statements)
        if leaks is not None:
            leaks.start()
        # Engines dropped by the application take their series with them.
        self._finalizer = weakref.finalize(engine, _release, self)

    def _build_backends(
        self,
        engine: Engine,
        settings: Settings,
        registry: CollectorRegistry | None,
        tracer_provider: Any,
        meter_provider: Any,
    ) -> tuple[PoolTracker, Any, Any]:
        trackers: list[PoolTracker] = []
        exemplar = None
        on_wait = None
        tracing = None
        if tracing_enabled(settings.tracing, tracer_provider):
            from .tracing import Tracing  # optional dependency: opentelemetry

            tracing = Tracing(self.name, settings, tracer_provider)
            on_wait = tracing.on_wait
            exemplar = tracing.exemplar if settings.exemplars else None
        db_system = db_system_name(engine.dialect.name)
        if settings.prometheus:
            metrics = metrics_for(
                registry, settings.labels, settings.pool_buckets, settings.operation_buckets
            )
            trackers.append(
                PrometheusTracker(metrics, self.state, settings.labels, db_system, exemplar)
            )
        if meter_provider is not None:
            from .otel_metrics import OTelTracker  # optional dependency: opentelemetry

            trackers.append(
                OTelTracker(meter_provider, self.state, settings.labels, db_system, settings)
            )
        return combine(trackers), on_wait, tracing

    @property
    def active(self) -> bool:
        return self._active

    def uninstrument(self) -> None:
        """Remove every listener and wrapper this instrumentation added; idempotent."""
        with _lock:
            if not self._active:
                return
            self._active = False
            self._finalizer.detach()
            for instrumented_engine, inst in list(_instrumented.items()):
                if inst is self:
                    del _instrumented[instrumented_engine]
            engine = self._pool._engine()
        self._teardown()
        if engine is not None and self._tracing is not None:
            self._tracing.uninstall(engine)

    def _teardown(self) -> None:
        try:
            self._pool.uninstall()
            if self._statements is not None:
                self._statements.uninstall()
            if self._leaks is not None:
                self._leaks.stop()
            self.tracker.close()
        except Exception as e:
            self.state.errors.report("uninstrument", e)
        finally:
            _names.release(_NAME_SCOPE, self.name)

    def __repr__(self) -> str:
        return f"<poolwatch.Instrumentation {self.name!r} active={self._active}>"


def _release(inst: Instrumentation) -> None:
    # Runs inside the garbage collector: no locks here (see lifecycle.py).
    inst._active = False
    defer(inst._teardown)


def _check_multiprocess() -> None:
    global _warned_multiprocess
    if _warned_multiprocess:
        return
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"):
        _warned_multiprocess = True
        logger.warning(
            "poolwatch: prometheus_client multiprocess mode is not supported yet; poolwatch's "
            "gauges are served per process by the registry you pass (see README, 'Pre-fork "
            "servers')"
        )


def instrument_engine(
    engine: Any,
    overrides: dict[str, Any],
    *,
    registry: CollectorRegistry | None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    automatic: bool = False,
) -> Instrumentation:
    sync_engine = getattr(engine, "sync_engine", engine)
    if not isinstance(sync_engine, Engine):
        raise TypeError(
            f"poolwatch: instrument() takes a sqlalchemy Engine or AsyncEngine, not "
            f"{type(engine).__name__}"
        )
    settings = resolve_settings(overrides)
    _check_multiprocess()
    run_deferred()
    with _lock:
        existing = _instrumented.get(sync_engine)
        if existing is not None and existing.active:
            if existing.automatic and not automatic:
                # An explicit call refines what the automatic mode did (e.g. gives a name).
                existing.uninstrument()
            else:
                return existing
        inst = Instrumentation(
            sync_engine,
            settings,
            registry=registry,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            automatic=automatic,
        )
        _instrumented[sync_engine] = inst
    if settings.port is not None:
        ensure_http_server(settings.addr, settings.port, registry)
    return inst


def uninstrument_engine(engine: Any) -> bool:
    sync_engine = getattr(engine, "sync_engine", engine)
    run_deferred()
    with _lock:
        inst = _instrumented.get(sync_engine)
    if inst is None:
        return False
    inst.uninstrument()
    return True


def instrumented(engine: Any) -> Instrumentation | None:
    with _lock:
        return _instrumented.get(getattr(engine, "sync_engine", engine))
