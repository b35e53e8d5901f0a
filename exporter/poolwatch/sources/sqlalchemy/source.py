"""SQLAlchemy engines as a :class:`poolwatch.core.instrumentation.Source`.

An engine gets three seams: its pool (:mod:`.pool`), its dialect's statement methods
(:mod:`.statements`) and, with tracing on, OpenTelemetry's ``EngineTracer`` (:mod:`.tracing`).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL, Engine

from poolwatch.core.instrumentation import (
    Instrumentation,
    TelemetryFactory,
    instrument_source,
    instrumented,
    uninstrument_target,
)
from poolwatch.core.naming import DEFAULT_PORTS, db_system_name, semconv_pool_name
from poolwatch.core.server_probe import ServerProbe
from poolwatch.core.state import PoolLimits
from poolwatch.sources.sqlalchemy.application_name import (
    set_application_name,
    unset_application_name,
)
from poolwatch.sources.sqlalchemy.pool import PoolInstrumentation, pool_limits
from poolwatch.sources.sqlalchemy.statements import StatementInstrumentation
from poolwatch.sql.server_limits import QUERIES, read_server_limits

if TYPE_CHECKING:
    from poolwatch.sources.sqlalchemy.tracing import StatementTracing

__all__ = [
    "SQLAlchemySource",
    "accepts",
    "default_pool_name",
    "instrument_engine",
    "instrumented_engine",
    "sync_engine_of",
    "uninstrument_engine",
]

KIND = "sqlalchemy"


def default_pool_name(url: URL) -> str:
    """``host:port/database`` from the URL; never the user name or the password."""
    return semconv_pool_name(url.get_backend_name(), url.host, url.port, url.database)


def sync_engine_of(target: Any) -> Engine | None:
    engine = getattr(target, "sync_engine", target)
    return engine if isinstance(engine, Engine) else None


def accepts(target: Any) -> bool:
    return sync_engine_of(target) is not None


class SQLAlchemySource:
    kind = KIND

    def __init__(self, engine: Engine) -> None:
        # Weak: the application owns the engine; dropping it must free it and its connections.
        self._engine = weakref.ref(engine)
        self._name = default_pool_name(engine.url)
        self.db_system = db_system_name(engine.dialect.name)
        url = engine.url
        port = url.port or DEFAULT_PORTS.get(url.get_backend_name()) if url.host else None
        # (server.address, server.port, db.namespace) as the pool addresses the server.
        self._server = (url.host or None, port, url.database or None)
        self._connect_wrapped = False
        self._pool: PoolInstrumentation | None = None
        self._statements: StatementInstrumentation | None = None
        self._tracing: StatementTracing | None = None

    def target(self) -> Engine | None:
        return self._engine()

    def default_name(self) -> str:
        return self._name

    def limits(self) -> PoolLimits:
        if self._pool is not None:
            limits = self._pool.limits()
        else:
            engine = self._engine()  # before install(): the backends read the timeout, say
            limits = pool_limits(engine.pool) if engine is not None else PoolLimits(pool_class="")
        return limits.with_server(*self._server)

    def install(self, inst: Instrumentation) -> None:
        engine = self._engine()
        if engine is None:
            return
        inst.state.is_open = _record_is_open
        readable = self.db_system in QUERIES
        probe = ServerProbe.of(inst, self._name, read_server_limits) if readable else None
        settings = inst.settings
        self._pool = PoolInstrumentation(
            engine, inst.state, inst.tracker, leaks=inst.leaks, on_wait=inst.on_wait, probe=probe
        )
        if settings.application_name is not False and self.db_system == "postgresql":
            wanted = inst.name if settings.application_name is True else settings.application_name
            self._connect_wrapped = set_application_name(engine.dialect, wanted)
        if settings.statement_metrics:
            self._statements = StatementInstrumentation(
                engine.dialect, inst.state, inst.tracker, settings
            )
        self._pool.install()
        if self._statements is not None:
            self._statements.install()
        if inst.telemetry.tracing is not None:
            from poolwatch.sources.sqlalchemy.tracing import StatementTracing

            self._tracing = StatementTracing(inst.telemetry.tracing, inst.state)
            self._tracing.install(engine, self._statements)

    def released(self) -> bool:
        return self._pool is not None and self._pool.disposed_unused()

    def uninstall(self) -> None:
        engine = self._engine()
        if self._connect_wrapped and engine is not None:
            unset_application_name(engine.dialect)
        if self._pool is not None:
            self._pool.uninstall()
        if self._statements is not None:
            self._statements.uninstall()
        engine = self._engine()
        if self._tracing is not None and engine is not None:
            self._tracing.uninstall(engine)


def _record_is_open(record: Any) -> bool:
    return getattr(record, "dbapi_connection", None) is not None


def instrument_engine(
    target: Any, overrides: dict[str, Any], telemetry: TelemetryFactory, *, automatic: bool = False
) -> Instrumentation:
    engine = sync_engine_of(target)
    if engine is None:
        raise TypeError(
            f"poolwatch: instrument() takes a sqlalchemy Engine or AsyncEngine, not "
            f"{type(target).__name__}"
        )
    return instrument_source(
        engine, lambda: SQLAlchemySource(engine), overrides, telemetry, automatic=automatic
    )


def uninstrument_engine(target: Any) -> bool:
    return uninstrument_target(getattr(target, "sync_engine", target))


def instrumented_engine(target: Any) -> Instrumentation | None:
    return instrumented(getattr(target, "sync_engine", target))
