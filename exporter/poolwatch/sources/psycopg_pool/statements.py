"""Statement timing on the connections of an instrumented psycopg_pool pool.

psycopg 3 has no statement hook. Every ``conn.execute()`` and ``conn.cursor().execute()`` goes
through ``conn.cursor_factory``, a class the connection holds (psycopg's ``Cursor`` by default,
Django's own, or one the application set). So each new connection of the pool gets, as its
``cursor_factory``, a subclass of the class it already had, which overrides ``execute`` and
``executemany`` only: the application's class stays the base and runs every statement, its
``row_factory`` is untouched, and the overriding ``execute`` is the compiled
:func:`poolwatch.core.hotpath.cursor_execute_wrapper` (one call and a cached dictionary lookup per
statement). A wrapper around each cursor (OpenTelemetry's psycopg instrumentation proxies the
connection) costs an object and a Python frame per statement; ``conn.wait``, through which every
operation goes, never sees the statement text. Server-side cursors (``server_cursor_factory``),
``stream()`` and ``copy()`` are not timed. ``uninstrument()`` gives each connection back its
own class.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import psycopg

from poolwatch.core import build as wrappers
from poolwatch.core.settings import Settings
from poolwatch.core.state import PoolState
from poolwatch.core.tracker import PENDING_LIMIT, PoolTracker
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
            base = self._bases.get(getattr(conn, "cursor_factory", None))  # type: ignore[arg-type]
            if base is not None:
                conn.cursor_factory = base
        self._connections.clear()

    # -- per connection ------------------------------------------------------------------------
    def adopt(self, conn: Any) -> None:
        """Time the statements of ``conn`` (a new connection of the pool)."""
        try:
            factory = getattr(conn, "cursor_factory", None)
            if not isinstance(factory, type) or factory in self._bases:
                return
            derived = self._derive(factory)
            if derived is not None:
                conn.cursor_factory = derived
                self._connections.add(conn)
        except Exception as e:
            self.state.errors.report("statement", e)

    def _derive(self, base: type) -> type | None:
        with self._lock:
            derived = self._derived.get(base)
            if derived is not None:
                return derived
            if issubclass(base, psycopg.AsyncCursor):
                execute = wrappers.async_cursor_execute_wrapper
            elif issubclass(base, psycopg.Cursor):
                execute = wrappers.cursor_execute_wrapper
            else:
                return None
            args = (self.switch, self, self._cache, self._series_for, self.slow_threshold,
                    PENDING_LIMIT)  # fmt: skip
            namespace: dict[str, Any] = {
                "__slots__": (),
                "__module__": base.__module__,
                "__qualname__": base.__qualname__,
                "execute": execute(base.execute, *args),
                "executemany": self._executemany(base),
            }
            derived = type(base.__name__, (base,), namespace)
            derived._poolwatch = self  # type: ignore[attr-defined]
            self._derived[base] = derived
            self._bases[derived] = base
            return derived

    def _executemany(self, base: type) -> Callable[..., Any]:
        """Off the hot path (one call for many rows): plain Python."""
        original: Callable[..., Any] = getattr(base, "executemany")  # noqa: B009
        statements = self

        if issubclass(base, psycopg.AsyncCursor):

            async def executemany_async(
                cursor: Any, query: Any, params_seq: Iterable[Any], *, returning: bool = False
            ) -> Any:
                if not statements.switch.on:
                    return await original(cursor, query, params_seq, returning=returning)
                series = statements._series_for(query)
                t0 = time.perf_counter()
                try:
                    result = await original(cursor, query, params_seq, returning=returning)
                except BaseException as e:
                    statements._failed(series, query, time.perf_counter() - t0, e)
                    raise
                statements._record(series, query, time.perf_counter() - t0)
                return result

            return executemany_async

        def executemany(
            cursor: Any, query: Any, params_seq: Iterable[Any], *, returning: bool = False
        ) -> Any:
            if not statements.switch.on:
                return original(cursor, query, params_seq, returning=returning)
            series = statements._series_for(query)
            t0 = time.perf_counter()
            try:
                result = original(cursor, query, params_seq, returning=returning)
            except BaseException as e:
                statements._failed(series, query, time.perf_counter() - t0, e)
                raise
            statements._record(series, query, time.perf_counter() - t0)
            return result

        return executemany

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
