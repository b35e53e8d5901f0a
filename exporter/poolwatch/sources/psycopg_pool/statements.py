"""Statement timing on the connections of an instrumented psycopg_pool pool.

psycopg 3 has no statement hook. Every ``conn.execute()`` and ``conn.cursor().execute()`` goes
through ``conn.cursor_factory``, a class the connection holds (psycopg's ``Cursor`` by default,
Django's own, or one the application set), and every ``conn.cursor(name=...)`` through
``conn.server_cursor_factory``. So each connection of the pool gets, as each factory, a subclass
of the class it already had, which overrides the methods that run statements only: the
application's class stays the base and runs every statement, its ``row_factory`` is untouched,
and the overriding ``execute`` of a client-side cursor is the compiled
:func:`poolwatch.core.hotpath.cursor_execute_wrapper` (one call and a cached dictionary lookup per
statement). ``executemany``, a server-side cursor's ``execute`` (its ``DECLARE``), ``stream()``
and ``copy()`` are timed by :mod:`.methods`, in plain Python (see there what their duration is).
A wrapper around each cursor (OpenTelemetry's psycopg instrumentation proxies the connection)
costs an object and a Python frame per statement; ``conn.wait``, through which every operation
goes, never sees the statement text. ``uninstrument()`` gives each connection back its own
classes.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import psycopg

from poolwatch.core import build as wrappers
from poolwatch.core.errors import logger
from poolwatch.core.state import PoolState
from poolwatch.core.statement_series import StatementSeries
from poolwatch.core.tracker import PENDING_LIMIT, PoolTracker
from poolwatch.sources.psycopg_pool.methods import observed_call, observed_copy, observed_stream
from poolwatch.sql.error_types import classify_error
from poolwatch.sql.redact import redact_sql
from poolwatch.sql.summary import UNKNOWN_SUMMARY, operation_name, summarize_sql

if TYPE_CHECKING:
    from poolwatch.core.hotpath import Series

__all__ = ["FACTORIES", "PsycopgStatements"]

FACTORIES = ("cursor_factory", "server_cursor_factory")
"""The connection attributes holding the cursor classes that run its statements."""

OTHER = UNKNOWN_SUMMARY
_DIALECT = "postgresql"  # the readings of quotes and comments redaction must agree on
STATEMENT_CACHE_SIZE = 2000


def _ignore(seconds: float) -> None:
    return None


def _nothing() -> None:
    return None


def _operation(summary: str) -> str:
    return operation_name(summary) if summary != OTHER else ""


class PsycopgStatements:
    def __init__(
        self,
        state: PoolState,
        tracker: PoolTracker,
        *,
        max_summaries: int,
        slow_threshold: float | None,
    ) -> None:
        self.state = state
        self.tracker = tracker
        self.max_summaries = max_summaries
        self.slow_threshold = slow_threshold
        self._cache: dict[str, Series] = {}
        self._series_of = StatementSeries(tracker, max_summaries, _operation)
        self._series = self._series_of.series
        self._lock = threading.Lock()
        self.switch = wrappers.Switch()
        # The connection's own class -> poolwatch's subclass of it; and back.
        self._derived: dict[type, type] = {}
        self._bases: dict[type, type] = {}
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._ignored = wrappers.Series("", "", _ignore, None, _nothing)

    def install(self) -> None:
        self.switch.on = True

    def uninstall(self) -> None:
        self.switch.on = False
        for conn in list(self._connections):
            for attribute in FACTORIES:
                base = self._bases.get(getattr(conn, attribute, None))  # type: ignore[arg-type]
                if base is not None:
                    setattr(conn, attribute, base)
        self._connections.clear()

    # -- per connection ------------------------------------------------------------------------
    def adopt(self, conn: Any) -> None:
        """Time the statements of ``conn`` (a new connection of the pool)."""
        try:
            for attribute in FACTORIES:
                factory = getattr(conn, attribute, None)
                if not isinstance(factory, type) or factory in self._bases:
                    continue
                derived = self._derive(factory)
                if derived is not None:
                    setattr(conn, attribute, derived)
                    self._connections.add(conn)
        except Exception as e:
            self.state.errors.report("statement", e)

    def _derive(self, base: type) -> type | None:
        with self._lock:
            derived = self._derived.get(base)
            if derived is not None:
                return derived
            is_async = issubclass(base, psycopg.AsyncCursor)
            if not is_async and not issubclass(base, psycopg.Cursor):
                return None
            cls: Any = base  # a psycopg cursor class
            namespace: dict[str, Any] = {
                "__slots__": (),
                "__module__": base.__module__,
                "__qualname__": base.__qualname__,
                "stream": observed_stream(cls.stream, self._begin, self._finish,
                                          is_async=is_async),
                "copy": observed_copy(cls.copy, self._begin, self._finish, is_async=is_async),
            }  # fmt: skip
            if issubclass(base, (psycopg.ServerCursor, psycopg.AsyncServerCursor)):
                # Its execute declares the cursor and takes no ``prepare``; its executemany
                # always raises NotSupportedError, before any round trip.
                namespace["execute"] = observed_call(cls.execute, self._begin, self._finish,
                                                     is_async=is_async)  # fmt: skip
            else:
                execute = (wrappers.async_cursor_execute_wrapper if is_async
                           else wrappers.cursor_execute_wrapper)  # fmt: skip
                args = (self.switch, self, self._cache, self._series_for, self.slow_threshold,
                        PENDING_LIMIT)  # fmt: skip
                namespace["execute"] = execute(cls.execute, *args)
                namespace["executemany"] = observed_call(
                    cls.executemany, self._begin, self._finish, is_async=is_async
                )
            derived = type(base.__name__, (base,), namespace)
            derived._poolwatch = self  # type: ignore[attr-defined]
            self._derived[base] = derived
            self._bases[derived] = base
            return derived

    def _begin(self, query: Any) -> tuple[Series, float] | None:
        """Off the hot path (see :mod:`.methods`): the statement's series and its start."""
        if not self.switch.on:
            return None
        return self._series_for(query), time.perf_counter()

    def _finish(
        self, token: tuple[Series, float] | None, query: Any, error: BaseException | None
    ) -> None:
        if token is None:
            return
        series, t0 = token
        elapsed = time.perf_counter() - t0
        if error is None:
            self._record(series, query, elapsed)
        else:
            self._failed(series, query, elapsed, error)

    # -- series ----------------------------------------------------------------------------------
    def _series_for(self, query: Any) -> Series:
        try:
            if query == "":
                # psycopg_pool's check_connection() (and Django's health checks): a round trip
                # of the pool's, not a statement of the application's. Cached like any string,
                # so the check costs the statement path a lookup and a no-op call.
                with self._lock:
                    self._cache[""] = self._ignored
                return self._ignored
            if isinstance(query, str):
                series = self._cache.get(query)
                if series is not None:
                    return series
                series = self._series(summarize_sql(query, _DIALECT))
                with self._lock:
                    if len(self._cache) >= STATEMENT_CACHE_SIZE:
                        self._cache.clear()
                    self._cache[query] = series
                return series
            if isinstance(query, bytes):
                return self._series(summarize_sql(query, _DIALECT))
            if isinstance(query, psycopg.sql.Composable):
                # Rendering needs no connection for SQL/Identifier/Literal-free compositions;
                # a Literal needs one, and its value never reaches the summary.
                return self._series(summarize_sql(query.as_string(None), _DIALECT))
            return self._series(OTHER)
        except Exception as e:
            self.state.errors.report("statement", e)
            return self._series(OTHER)

    def _record(self, series: Series, query: Any, elapsed: float) -> None:
        try:
            series.record(elapsed)
            if series.pending is not None and series.pending() > PENDING_LIMIT:
                series.drain()
            if self.slow_threshold is not None and elapsed >= self.slow_threshold:
                self._log_slow(series, query, elapsed)
        except Exception as e:
            self.state.errors.report("statement", e)

    def _failed(self, series: Series, query: Any, elapsed: float, error: BaseException) -> None:
        try:
            self._series_of.failed(series, classify_error(error), elapsed)
        except Exception as e:
            self.state.errors.report("statement", e)

    def _log_slow(self, series: Series, query: Any, elapsed: float) -> None:
        text = query if isinstance(query, str) else series.summary
        logger.warning(
            "poolwatch: slow statement on pool %r: %s took %.3f s (slow_query_threshold=%g s): %s",
            self.state.name,
            series.summary,
            elapsed,
            self.slow_threshold,
            redact_sql(text, dialect=_DIALECT),
        )
