"""Statement timing through the dialect's ``do_execute*`` methods.

Any ``before/after_cursor_execute`` listener makes SQLAlchemy take a slower execution path (about
13 µs per statement on SQLite before the listener does anything). The dialect's ``do_execute``,
``do_execute_no_params`` and ``do_executemany`` are called for every statement on either path,
with the statement text and the execution context, so poolwatch wraps those on the engine's own
dialect instance: one extra call and a cached dictionary lookup per statement. ``DialectEvents``
would be the public spelling of the same seam, but a listener there must run the statement itself
and return ``True``, which would stop any listener of the application's registered after it.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Dialect

from .error_types import classify_error
from .guard import logger
from .redact import redact_sql
from .state import PoolState
from .summary import UNKNOWN_SUMMARY, operation_name, summarize_compiled, summarize_sql
from .tracker import PoolTracker, Recorder

__all__ = ["StatementInstrumentation"]

# Statements past the summary cap, and statements with no recognisable summary, share one series.
OTHER = UNKNOWN_SUMMARY
# Statement strings remembered per pool; past this the cache starts over, so a stream of
# distinct statements costs a summary each time but never unbounded memory.
STATEMENT_CACHE_SIZE = 2000
# Folded summaries are counted once each; remembering which were seen is bounded too.
FOLDED_TRACKED = 10_000
_METHODS = ("do_execute", "do_execute_no_params", "do_executemany")


class _Series:
    __slots__ = ("operation", "record", "summary")

    def __init__(self, operation: str, summary: str, record: Recorder) -> None:
        self.operation = operation
        self.summary = summary
        self.record = record


class StatementInstrumentation:
    def __init__(
        self,
        dialect: Dialect,
        state: PoolState,
        tracker: PoolTracker,
        *,
        max_summaries: int,
        slow_threshold: float | None,
    ) -> None:
        self._dialect = weakref.ref(dialect)
        self.state = state
        self.tracker = tracker
        self.max_summaries = max_summaries
        self.slow_threshold = slow_threshold
        self._cache: dict[str, _Series] = {}
        self._by_summary: dict[str, _Series] = {}
        self._folded: set[str] = set()
        self._lock = threading.Lock()
        self._active = False

    def install(self) -> None:
        dialect = self._dialect()
        if dialect is None or self._active:
            return
        self._active = True
        for method in _METHODS:
            setattr(dialect, method, self._wrap(method, getattr(dialect, method)))

    def uninstall(self) -> None:
        self._active = False
        dialect = self._dialect()
        if dialect is None:
            return
        for method in _METHODS:
            current = dialect.__dict__.get(method)
            if getattr(current, "_poolwatch", None) is self:
                delattr(dialect, method)

    def _wrap(self, method: str, original: Callable[..., Any]) -> Callable[..., Any]:
        # Exact signatures, no *args/**kwargs: this runs for every statement, and packing
        # arguments into a tuple and a dict each time was a measurable part of its cost.
        cache = self._cache
        perf_counter = time.perf_counter
        series_for = self._series_for
        slow = self.slow_threshold
        instrumentation = self

        def record(series: _Series, statement: str, elapsed: float) -> None:
            try:
                series.record(elapsed)
                if slow is not None and elapsed >= slow:
                    instrumentation._log_slow(series, statement, elapsed)
            except Exception as e:
                instrumentation.state.errors.report("statement", e)

        if method == "do_execute_no_params":

            def poolwatch_execute(cursor: Any, statement: str, context: Any = None) -> Any:
                if not instrumentation._active:
                    return original(cursor, statement, context)
                series = cache.get(statement) or series_for(statement, context)
                t0 = perf_counter()
                try:
                    result = original(cursor, statement, context)
                except BaseException as e:
                    instrumentation._failed(series, statement, perf_counter() - t0, e)
                    raise
                record(series, statement, perf_counter() - t0)
                return result

        else:  # do_execute, do_executemany: (cursor, statement, parameters, context)

            def poolwatch_execute(  # type: ignore[misc]
                cursor: Any, statement: str, parameters: Any, context: Any = None
            ) -> Any:
                if not instrumentation._active:
                    return original(cursor, statement, parameters, context)
                series = cache.get(statement) or series_for(statement, context)
                t0 = perf_counter()
                try:
                    result = original(cursor, statement, parameters, context)
                except BaseException as e:
                    instrumentation._failed(series, statement, perf_counter() - t0, e)
                    raise
                record(series, statement, perf_counter() - t0)
                return result

        poolwatch_execute.__wrapped__ = original  # type: ignore[attr-defined]
        poolwatch_execute._poolwatch = self  # type: ignore[attr-defined]
        return poolwatch_execute

    def _series_for(self, statement: str, context: Any) -> _Series:
        try:
            compiled = getattr(context, "compiled", None)
            summary = (summarize_compiled(compiled) if compiled is not None else None) or (
                summarize_sql(statement)
            )
            series = self._series(summary)
            with self._lock:
                if len(self._cache) >= STATEMENT_CACHE_SIZE:
                    self._cache.clear()
                self._cache[statement] = series
            return series
        except Exception as e:
            self.state.errors.report("statement", e)
            return self._series(OTHER)

    def _series(self, summary: str) -> _Series:
        with self._lock:
            series = self._by_summary.get(summary)
            if series is not None:
                return series
            distinct = len(self._by_summary) - (OTHER in self._by_summary)
            if distinct >= self.max_summaries and summary != OTHER:
                if summary not in self._folded and len(self._folded) < FOLDED_TRACKED:
                    self._folded.add(summary)
                    self.tracker.summary_folded()
                other = self._by_summary.get(OTHER)
                if other is None:
                    other = _Series("", OTHER, self.tracker.statement("", OTHER))
                    # "other" does not count against the cap: it is the cap's overflow.
                    self._by_summary[OTHER] = other
                return other
            operation = operation_name(summary) if summary != OTHER else ""
            series = _Series(operation, summary, self.tracker.statement(operation, summary))
            self._by_summary[summary] = series
            return series

    def _failed(
        self, series: _Series, statement: str, elapsed: float, error: BaseException
    ) -> None:
        try:
            error_type = classify_error(error)
            self.tracker.statement_failed(series.operation, series.summary, error_type, elapsed)
        except Exception as e:
            self.state.errors.report("statement", e)

    def _log_slow(self, series: _Series, statement: str, elapsed: float) -> None:
        logger.warning(
            "poolwatch: slow statement on pool %r: %s took %.3f s (slow_query_threshold=%g s): %s",
            self.state.name,
            series.summary,
            elapsed,
            self.slow_threshold,
            redact_sql(statement),
        )
