"""Statement spans for one SQLAlchemy engine, from ``opentelemetry-instrumentation-sqlalchemy``.

Statement spans come from ``opentelemetry-instrumentation-sqlalchemy``'s ``EngineTracer``,
attached to this one engine. Its ``SQLAlchemyInstrumentor().instrument()`` is not used because
it wraps ``create_engine`` and ``Engine.connect`` for the whole process and, on SQLAlchemy 2.1,
refuses to run at all (the package declares ``sqlalchemy<2.1``). EngineTracer's cursor-event
listeners are not registered with SQLAlchemy: poolwatch runs those same functions from its
``do_execute`` seam (:class:`poolwatch.sources.sqlalchemy.statements.CursorHooks`), because any
cursor-event
listener sends every statement down SQLAlchemy's slower event path (about 13 µs a statement on
SQLite before the listener does anything). The tracer handed to it is a
thin wrapper that keeps literals, bound values and the user name out of the spans: the
statement is passed through :func:`poolwatch.sql.redact.redact_sql`, ``db.user`` and query
parameters are dropped, and an error's message (which can quote row data) is withheld: a failed
statement's span has ``error.type`` and an ``exception`` event with the type only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from poolwatch.backends.otel.tracing import RedactingTracer, Tracing
from poolwatch.core.errors import logger
from poolwatch.core.naming import db_system_name
from poolwatch.core.state import PoolState
from poolwatch.sources.sqlalchemy.statements import CursorHooks, StatementInstrumentation
from poolwatch.sql.error_types import classify_error

__all__ = ["StatementTracing"]

# EngineTracer's pool listeners only feed the deprecated db.client.connections.usage metric,
# which poolwatch's own gauges replace; not registering them keeps checkouts cheap.
_POOL_USAGE_EVENTS = frozenset({"connect", "close", "checkin", "checkout"})
# EngineTracer's statement listeners, run from poolwatch's do_execute seam when there is one.
_CURSOR_EVENTS = frozenset({"before_cursor_execute", "after_cursor_execute", "handle_error"})


class StatementTracing:
    """EngineTracer on one engine, its cursor listeners run from poolwatch's statement seam."""

    def __init__(self, tracing: Tracing, state: PoolState) -> None:
        self._tracing = tracing
        self._pool_name = state.name
        self._listeners: list[tuple[str, Callable[..., Any]]] = []
        self._seam: StatementInstrumentation | None = None

    def install(self, engine: Engine, seam: StatementInstrumentation | None = None) -> None:
        """Statement spans for this engine only (opentelemetry-instrumentation-sqlalchemy).

        With ``seam`` (the engine's statement instrumentation), EngineTracer's cursor listeners
        run from it; without, they are registered as SQLAlchemy events.
        """
        self._tracing.add_attributes({"db.system.name": db_system_name(engine.dialect.name)})
        self._tracing.timeout_errors = (sa_exc.TimeoutError,)
        try:
            from opentelemetry.instrumentation.sqlalchemy import engine as otel_engine
        except ImportError:
            logger.warning(
                "poolwatch: statement spans need opentelemetry-instrumentation-sqlalchemy "
                "(pip install 'poolwatch[otel]'); only pool-wait spans are recorded"
            )
            return
        if _traced_by_opentelemetry(otel_engine.EngineTracer, engine):
            # SQLAlchemyInstrumentor already traces this engine; a second tracer would
            # duplicate every statement span.
            logger.info(
                "poolwatch: engine %r is already traced by SQLAlchemyInstrumentor; poolwatch adds "
                "only pool-wait spans",
                self._pool_name,
            )
            return
        from opentelemetry.instrumentation.sqlalchemy.version import __version__ as otel_version
        from opentelemetry.metrics import NoOpUpDownCounter

        tracer = RedactingTracer(
            trace.get_tracer(
                "opentelemetry.instrumentation.sqlalchemy", otel_version, self._tracing.provider
            ),
            engine.dialect.name,
        )
        listeners = self._listeners
        cursor_listeners: dict[str, Callable[..., Any]] = {}

        class _EngineTracer(otel_engine.EngineTracer):
            # EngineTracer registers its listeners through this classmethod and keeps them in a
            # process-wide list that SQLAlchemyInstrumentor().uninstrument() empties; poolwatch
            # keeps its own, so uninstall removes exactly these and nobody else's.
            def _register_event_listener(  # type: ignore[override]
                self, target: Any, identifier: str, fn: Callable[..., Any], *a: Any, **kw: Any
            ) -> None:
                if identifier in _POOL_USAGE_EVENTS:
                    return
                if identifier == "handle_error":
                    fn = _with_error_type(fn)
                if seam is not None and identifier in _CURSOR_EVENTS:
                    cursor_listeners[identifier] = fn
                    return
                event.listen(target, identifier, fn, *a, **kw)
                listeners.append((identifier, fn))

        _EngineTracer(  # type: ignore[no-untyped-call]
            tracer,
            engine,
            NoOpUpDownCounter("db.client.connections.usage"),
            enable_commenter=False,
            commenter_options={},
        )
        before = cursor_listeners.get("before_cursor_execute")
        after = cursor_listeners.get("after_cursor_execute")
        if seam is not None and before is not None and after is not None:
            seam.set_cursor_hooks(CursorHooks(before, after, cursor_listeners.get("handle_error")))
            self._seam = seam
        elif cursor_listeners:  # an EngineTracer with a different set: use the events after all
            for identifier, fn in cursor_listeners.items():
                kw = {"retval": True} if identifier == "before_cursor_execute" else {}
                event.listen(engine, identifier, fn, **kw)
                listeners.append((identifier, fn))
        if not listeners and self._seam is None:
            # A future EngineTracer that registers its listeners differently.
            logger.error(
                "poolwatch: this opentelemetry-instrumentation-sqlalchemy is not supported; no "
                "statement spans for pool %r",
                self._pool_name,
            )

    def uninstall(self, engine: Engine) -> None:
        """Remove exactly the listeners ``install`` added; later waits record no span."""
        self._tracing.stop()
        seam, self._seam = self._seam, None
        if seam is not None:
            seam.set_cursor_hooks(None)
        listeners, self._listeners = self._listeners, []
        for identifier, fn in listeners:
            try:
                if event.contains(engine, identifier, fn):
                    event.remove(engine, identifier, fn)
            except Exception as e:  # never into the application
                logger.error("poolwatch: could not remove a tracing listener: %s", e)


def _with_error_type(handle_error: Callable[[Any], None]) -> Callable[[Any], None]:
    """EngineTracer's ``handle_error`` listener, which first gives the statement span the
    semantic conventions' ``error.type`` (the SQLSTATE class, as on the error counter); the
    listener itself puts only the message into the status, which the span wrapper withholds."""

    def on_error(context: Any) -> None:
        span = getattr(getattr(context, "execution_context", None), "_otel_span", None)
        if span is not None and span.is_recording():
            span.set_attribute("error.type", classify_error(context.original_exception))
        handle_error(context)

    return on_error


def _traced_by_opentelemetry(engine_tracer: Any, engine: Engine) -> bool:
    for entry in list(getattr(engine_tracer, "_remove_event_listener_params", ())):
        try:
            if entry[0]() is engine:
                return True
        except Exception:  # unknown layout: assume not traced
            return False
    return False


