"""What every source's statement seam shares: a statement's text to its series, a failed
statement counted by error type, and the slow-statement log line.

A statement string is summarized once, under the readings of quotes and comments of the pool's
dialect, and its :class:`~poolwatch.core.hotpath.Series` cached (past
:data:`STATEMENT_CACHE_SIZE` strings the cache starts over, so a stream of distinct statements
costs a summary each but never unbounded memory). The per-statement wrappers themselves are the
compiled ones (:mod:`poolwatch.core.hotpath`): they read the cache and call back here only on a
miss, a failure or a slow statement.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from poolwatch.core import build as wrappers
from poolwatch.core.errors import logger
from poolwatch.core.settings import Settings
from poolwatch.core.state import PoolState
from poolwatch.core.statement_series import StatementSeries
from poolwatch.core.tracker import PENDING_LIMIT, PoolTracker
from poolwatch.sql.error_types import classify_error
from poolwatch.sql.redact import redact_sql
from poolwatch.sql.summary import UNKNOWN_SUMMARY, operation_name, summarize_sql

if TYPE_CHECKING:
    from poolwatch.core.hotpath import Series

__all__ = ["OTHER", "STATEMENT_CACHE_SIZE", "StatementTiming"]

OTHER = UNKNOWN_SUMMARY
"""The series of statements past the summary cap and of those with no recognisable summary."""
STATEMENT_CACHE_SIZE = 2000
"""Statement strings remembered per pool."""


def _operation(summary: str) -> str:
    return operation_name(summary) if summary != OTHER else ""


class StatementTiming:
    """One pool's statement series and what the wrappers call back; a source's statement seam
    derives from it and installs the wrappers."""

    def __init__(
        self, state: PoolState, tracker: PoolTracker, settings: Settings, dialect_name: str
    ) -> None:
        self.state = state
        self.tracker = tracker
        self.max_summaries = settings.max_query_summaries
        self.slow_threshold = settings.slow_query_threshold
        # Which readings of quotes and comments summarize_sql and redact_sql must agree on.
        self._dialect_name = dialect_name
        self._cache: dict[str, Series] = {}
        self._series_of = StatementSeries(tracker, self.max_summaries, _operation)
        self._series = self._series_of.series
        self._lock = threading.Lock()
        # What the installed wrappers read on every call: on/off (and the cursor hooks).
        self.switch = wrappers.Switch()

    def _summarized(self, statement: str) -> Series:
        """The series of a statement string not in the cache, which remembers it from now on."""
        series = self._series(summarize_sql(statement, self._dialect_name))
        with self._lock:
            if len(self._cache) >= STATEMENT_CACHE_SIZE:
                self._cache.clear()
            self._cache[statement] = series
        return series

    def _record(self, series: Series, statement: Any, elapsed: float) -> None:
        try:
            series.record(elapsed)
            if series.pending is not None and series.pending() > PENDING_LIMIT:
                series.drain()
            if self.slow_threshold is not None and elapsed >= self.slow_threshold:
                self._log_slow(series, statement, elapsed)
        except Exception as e:
            self.state.errors.report("statement", e)

    def _failed(self, series: Series, statement: Any, elapsed: float, error: BaseException) -> None:
        try:
            self._series_of.failed(series, classify_error(error), elapsed)
        except Exception as e:
            self.state.errors.report("statement", e)

    def _log_slow(self, series: Series, statement: Any, elapsed: float) -> None:
        # A statement that is not a string (psycopg's sql.Composed, bytes) shows as its summary.
        text = statement if isinstance(statement, str) else series.summary
        logger.warning(
            "poolwatch: slow statement on pool %r: %s took %.3f s (slow_query_threshold=%g s): %s",
            self.state.name,
            series.summary,
            elapsed,
            self.slow_threshold,
            redact_sql(text, dialect=self._dialect_name),
        )
