"""Statement spans on the connections of an instrumented psycopg_pool pool, with tracing on.

``opentelemetry-instrumentation-psycopg`` does not fit: its ``instrument_connection`` replaces
the connection's ``cursor_factory`` with a subclass of psycopg's ``Cursor``, dropping the class
the application (or Django) set. So the spans are poolwatch's own, the way the statements are
timed: a subclass of each of the connection's cursor classes (poolwatch's timed one, itself
deriving from the application's) whose ``execute``, ``executemany``, ``stream()`` and ``copy()``
run in a CLIENT span named by the statement's summary, with the semantic conventions' attributes,
over the same span of time as the timing (:mod:`.methods`). The tracer is a
:class:`poolwatch.backends.otel.tracing.RedactingTracer`: ``db.query.text`` has its literals
replaced, and no parameter or user is written.
"""

from __future__ import annotations

from typing import Any

import psycopg
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from poolwatch.backends.otel.tracing import POOL_NAME_ATTRIBUTE, RedactingTracer, Tracing
from poolwatch.core.state import PoolState
from poolwatch.core.version import __version__
from poolwatch.sources.psycopg_pool.cursor_classes import CursorClasses
from poolwatch.sources.psycopg_pool.methods import observed_call, observed_copy, observed_stream
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
        self._classes = CursorClasses(self._namespace)
        self.on = True

    def adopt(self, conn: Any) -> None:
        try:
            self._classes.adopt(conn)
        except Exception as e:
            self.state.errors.report("tracing", e)

    def uninstall(self) -> None:
        self.on = False
        self._classes.restore()

    def _namespace(self, base: type) -> dict[str, Any] | None:
        """What the tracing subclass of the cursor class ``base`` overrides."""
        if not issubclass(base, (psycopg.Cursor, psycopg.AsyncCursor)):
            return None
        is_async = issubclass(base, psycopg.AsyncCursor)
        cls: Any = base  # a psycopg cursor class
        begin, finish = self._begin, self._finish
        namespace: dict[str, Any] = {
            "execute": observed_call(cls.execute, begin, finish, is_async=is_async),
            "stream": observed_stream(cls.stream, begin, finish, is_async=is_async),
            "copy": observed_copy(cls.copy, begin, finish, is_async=is_async),
        }
        if not issubclass(base, (psycopg.ServerCursor, psycopg.AsyncServerCursor)):
            # A server-side cursor's executemany raises before any round trip.
            namespace["executemany"] = observed_call(
                cls.executemany, begin, finish, is_async=is_async
            )
        return namespace

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

    def _begin(self, query: Any) -> Any:
        if not self.on:
            return None
        try:
            return self._start(query)
        except Exception as e:
            self.state.errors.report("tracing", e)
            return None

    def _finish(self, span: Any, query: Any, error: BaseException | None) -> None:
        if span is None:
            return
        try:
            if error is not None:
                self._failed(span, error)
            span.end()
        except Exception as e:
            self.state.errors.report("tracing", e)
