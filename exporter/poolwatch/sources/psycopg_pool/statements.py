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

import time
from typing import TYPE_CHECKING, Any

import psycopg

from poolwatch.core import build as wrappers
from poolwatch.core.settings import Settings
from poolwatch.core.state import PoolState
from poolwatch.core.tracker import PENDING_LIMIT, PoolTracker
from poolwatch.sources.psycopg_pool.cursor_classes import CursorClasses
from poolwatch.sources.psycopg_pool.methods import observed_call, observed_copy, observed_stream
from poolwatch.sql.statement_timing import OTHER, StatementTiming
from poolwatch.sql.summary import summarize_sql

if TYPE_CHECKING:
    from poolwatch.core.hotpath import Series

__all__ = ["PsycopgStatements"]

_DIALECT = "postgresql"  # the readings of quotes and comments summaries and redaction agree on


def _ignore(seconds: float) -> None:
    return None


def _nothing() -> None:
    return None


class PsycopgStatements(StatementTiming):
    def __init__(self, state: PoolState, tracker: PoolTracker, settings: Settings) -> None:
        super().__init__(state, tracker, settings, _DIALECT)
        self._classes = CursorClasses(self._namespace)
        self._ignored = wrappers.Series("", "", _ignore, None, _nothing)

    def install(self) -> None:
        self.switch.on = True

    def uninstall(self) -> None:
        self.switch.on = False
        self._classes.restore()

    # -- per connection ------------------------------------------------------------------------
    def adopt(self, conn: Any) -> None:
        """Time the statements of ``conn`` (a new connection of the pool)."""
        try:
            self._classes.adopt(conn)
        except Exception as e:
            self.state.errors.report("statement", e)

    def _namespace(self, base: type) -> dict[str, Any] | None:
        """What poolwatch's subclass of the cursor class ``base`` overrides."""
        is_async = issubclass(base, psycopg.AsyncCursor)
        if not is_async and not issubclass(base, psycopg.Cursor):
            return None
        cls: Any = base  # a psycopg cursor class
        begin, finish = self._begin, self._finish
        namespace: dict[str, Any] = {
            "_poolwatch": self,
            "stream": observed_stream(cls.stream, begin, finish, is_async=is_async),
            "copy": observed_copy(cls.copy, begin, finish, is_async=is_async),
        }
        if issubclass(base, (psycopg.ServerCursor, psycopg.AsyncServerCursor)):
            # Its execute declares the cursor and takes no ``prepare``; its executemany
            # always raises NotSupportedError, before any round trip.
            namespace["execute"] = observed_call(cls.execute, begin, finish, is_async=is_async)
        else:
            execute = (wrappers.async_cursor_execute_wrapper if is_async
                       else wrappers.cursor_execute_wrapper)  # fmt: skip
            args = (self.switch, self, self._cache, self._series_for, self.slow_threshold,
                    PENDING_LIMIT)  # fmt: skip
            namespace["execute"] = execute(cls.execute, *args)
            namespace["executemany"] = observed_call(
                cls.executemany, begin, finish, is_async=is_async
            )
        return namespace

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
                return series if series is not None else self._summarized(query)
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
