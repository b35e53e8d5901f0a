"""Statement spans on the connections of an instrumented psycopg_pool pool, with tracing on.

``opentelemetry-instrumentation-psycopg`` does not fit: its ``instrument_connection`` replaces
the connection's ``cursor_factory`` with a subclass of psycopg's ``Cursor``, dropping the class
the application (or Django) set. So the spans are poolwatch's own, the way the statements are
timed: a subclass of the connection's class (poolwatch's timed one, itself deriving from the
application's) whose ``execute``/``executemany`` run in a CLIENT span named by the statement's
summary, with the semantic conventions' attributes. The tracer is a
:class:`poolwatch.backends.otel.tracing.RedactingTracer`: ``db.query.text`` has its literals
replaced, and no parameter or user is written.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import psycopg
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from poolwatch.backends.otel.tracing import POOL_NAME_ATTRIBUTE, RedactingTracer, Tracing
from poolwatch.core.state import PoolState
from poolwatch.core.version import __version__
from poolwatch.sql.error_types import classify_error
from poolwatch.sql.summary import operation_name, summarize_sql

__all__ = ["PsycopgTracing"]

_SUMMARIES_CACHED = 2000


class PsycopgTracing:
    def __init__(self, tracing: Tracing, state: PoolState) -> None:
        self.state = state
        self._tracer = RedactingTracer(
            trace.get_tracer("poolwatch", __version__, tracing.provider)
        )
        self._attributes = {"db.system.name": "postgresql", POOL_NAME_ATTRIBUTE: state.name}
        self._summaries: dict[str, str] = {}
        self._derived: dict[type, type] = {}
        self._bases: dict[type, type] = {}
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self.on = True

    def adopt(self, conn: Any) -> None:
        try:
            factory = getattr(conn, "cursor_factory", None)
            if not isinstance(factory, type) or factory in self._bases:
                return
            if not issubclass(factory, (psycopg.Cursor, psycopg.AsyncCursor)):
                return
            conn.cursor_factory = self._derive(factory)
            self._connections.add(conn)
        except Exception as e:
            self.state.errors.report("tracing", e)

    def uninstall(self) -> None:
        self.on = False
        for conn in list(self._connections):
            base = self._bases.get(getattr(conn, "cursor_factory", None))  # type: ignore[arg-type]
            if base is not None:
                conn.cursor_factory = base
        self._connections.clear()

    def _derive(self, base: type) -> type:
        with self._lock:
            derived = self._derived.get(base)
            if derived is None:
                is_async = issubclass(base, psycopg.AsyncCursor)
                namespace = {
                    "__slots__": (),
                    "__module__": base.__module__,
                    "__qualname__": base.__qualname__,
                    "execute": self._traced(getattr(base, "execute"), is_async),  # noqa: B009
                    "executemany": self._traced(getattr(base, "executemany"), is_async),  # noqa: B009
                }
                derived = type(base.__name__, (base,), namespace)
                self._derived[base] = derived
                self._bases[derived] = base
            return derived

    def _start(self, query: Any) -> Any:
        summary = self._summary(query)
        attributes: dict[str, Any] = {**self._attributes, "db.query.summary": summary}
        operation = operation_name(summary)
        if operation:
            attributes["db.operation.name"] = operation
        if isinstance(query, str):
            attributes["db.query.text"] = query  # redacted by the tracer
        return self._tracer.start_span(summary, kind=SpanKind.CLIENT, attributes=attributes)

    def _summary(self, query: Any) -> str:
        if not isinstance(query, (str, bytes)):
            return "other"
        found = self._summaries.get(query) if isinstance(query, str) else None
        if found is None:
            found = summarize_sql(query)
            if isinstance(query, str):
                if len(self._summaries) >= _SUMMARIES_CACHED:
                    self._summaries.clear()
                self._summaries[query] = found
        return found

    def _failed(self, span: Any, error: BaseException) -> None:
        span.set_attribute("error.type", classify_error(error))
        span.set_status(Status(StatusCode.ERROR))

    def _traced(self, method: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        tracing = self

        def begin(query: Any) -> Any:
            if not tracing.on:
                return None
            try:
                return tracing._start(query)
            except Exception as e:
                tracing.state.errors.report("tracing", e)
                return None

        def finish(span: Any, error: BaseException | None) -> None:
            if span is None:
                return
            try:
                if error is not None:
                    tracing._failed(span, error)
                span.end()
            except Exception as e:
                tracing.state.errors.report("tracing", e)

        if is_async:

            async def traced_async(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
                span = begin(query)
                try:
                    result = await method(cursor, query, *args, **kwargs)
                except BaseException as e:
                    finish(span, e)
                    raise
                finish(span, None)
                return result

            return traced_async

        def traced(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            span = begin(query)
            try:
                result = method(cursor, query, *args, **kwargs)
            except BaseException as e:
                finish(span, e)
                raise
            finish(span, None)
            return result

        return traced
