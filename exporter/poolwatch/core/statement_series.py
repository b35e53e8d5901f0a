"""One pool's statement series, by query summary: the cap, ``other``, and the folded count.

Every source that times statements resolves a statement's summary to a
:class:`~poolwatch.core.hotpath.Series` here (once per statement string; the sources cache the
result), so the cap and ``poolwatch_query_summaries_folded_total`` mean the same for every pool
library: past ``max_summaries`` distinct summaries, statements count under ``other``, and the
folded counter counts every one of their executions (failed ones too), exactly and in constant
memory. Statements under the cap pay nothing for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from poolwatch.core import build as wrappers
from poolwatch.core.tracker import NOTHING_PENDING, PoolTracker, Sink

if TYPE_CHECKING:
    from poolwatch.core.hotpath import Series

__all__ = ["OTHER", "StatementSeries", "new_series"]

OTHER = "other"
"""The summary of statements past the cap, and of those with no recognisable summary (the same
value as :data:`poolwatch.sql.summary.UNKNOWN_SUMMARY`)."""


def new_series(operation: str, summary: str, sink: Sink) -> Series:
    """A series whose recorders are copied out of ``sink``: the statement path reads them from
    the series (C struct fields when compiled)."""
    pending = None if sink.pending is NOTHING_PENDING else sink.pending
    return wrappers.Series(operation, summary, sink.record, pending, sink.drain)


class StatementSeries:
    def __init__(
        self,
        tracker: PoolTracker,
        max_summaries: int,
        operation_name: Callable[[str], str],
    ) -> None:
        self.tracker = tracker
        self.max_summaries = max_summaries
        self._operation_name = operation_name
        self._by_summary: dict[str, Series] = {}
        self._folded: Series | None = None
        self._lock = threading.Lock()

    def series(self, summary: str) -> Series:
        """The series of ``summary``, created on first use."""
        with self._lock:
            series = self._by_summary.get(summary)
            if series is not None:
                return series
            distinct = len(self._by_summary) - (OTHER in self._by_summary)
            if distinct >= self.max_summaries and summary != OTHER:
                return self._folded_series()
            if summary == OTHER:
                return self._other_series()
            operation = self._operation_name(summary)
            series = new_series(operation, summary, self.tracker.statement(operation, summary))
            self._by_summary[summary] = series
            return series

    def failed(self, series: Series, error_type: str, seconds: float) -> None:
        """A statement of ``series`` raised."""
        if series is self._folded:
            self.tracker.summary_folded()
        self.tracker.statement_failed(series.operation, series.summary, error_type, seconds)

    def _other_series(self) -> Series:
        # Called with the lock held. "other" does not count against the cap: it is the overflow.
        other = self._by_summary.get(OTHER)
        if other is None:
            other = new_series("", OTHER, self.tracker.statement("", OTHER))
            self._by_summary[OTHER] = other
        return other

    def _folded_series(self) -> Series:
        # Called with the lock held: "other", counting each execution as folded.
        folded = self._folded
        if folded is None:
            other = self._other_series()
            record_other = other.record
            count = self.tracker.summary_folded

            def record(seconds: float) -> None:
                record_other(seconds)
                count()

            folded = self._folded = wrappers.Series("", OTHER, record, other.pending, other.drain)
        return folded
