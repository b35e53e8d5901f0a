"""Statement timing through the dialect's ``do_execute*`` methods.

Any ``before/after_cursor_execute`` listener makes SQLAlchemy take a slower execution path (about
13 µs per statement on SQLite before the listener does anything). The dialect's ``do_execute``,
``do_execute_no_params`` and ``do_executemany`` are called for every statement on either path,
with the statement text and the execution context, so poolwatch wraps those on the engine's own
dialect instance: one extra call and a cached dictionary lookup per statement. ``DialectEvents``
would be the public spelling of the same seam, but a listener there must run the statement itself
and return ``True``, which would stop any listener of the application's registered after it.

The same seam carries listeners written for the cursor events (:class:`CursorHooks`):
OpenTelemetry's ``EngineTracer`` registers ``before/after_cursor_execute`` and ``handle_error``
listeners, and poolwatch runs exactly those functions here, with the arguments SQLAlchemy would
pass, instead of registering them. The statement spans are OpenTelemetry's own; SQLAlchemy's slow
path is avoided, and an exception inside a listener is reported instead of failing the query.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy.engine import Dialect

from poolwatch.core import build as wrappers
from poolwatch.core.seams import install_wrappers, remove_wrappers
from poolwatch.core.settings import Settings
from poolwatch.core.state import PoolState
from poolwatch.core.tracker import PENDING_LIMIT, PoolTracker
from poolwatch.sources.sqlalchemy import _compat
from poolwatch.sql.statement_timing import OTHER, StatementTiming

if TYPE_CHECKING:
    from poolwatch.core.hotpath import Series

__all__ = ["CursorHooks", "StatementInstrumentation"]

_METHODS = ("do_execute", "do_execute_no_params", "do_executemany")


class CursorHooks(NamedTuple):
    """Listeners in the signatures of SQLAlchemy's cursor events, run from the do_execute seam.

    ``before`` is called like a ``before_cursor_execute`` listener registered with
    ``retval=True`` and returns ``(statement, parameters)``; ``after`` like
    ``after_cursor_execute``; ``error`` like ``handle_error``, with an object carrying
    ``execution_context`` and ``original_exception``.
    """

    before: Callable[..., tuple[str, Any]]
    after: Callable[..., None]
    error: Callable[[Any], None] | None = None


class ExecutionError:
    """What a ``handle_error`` listener reads of SQLAlchemy's ``ExceptionContext``."""

    __slots__ = ("execution_context", "original_exception")

    def __init__(self, context: Any, error: BaseException) -> None:
        self.execution_context = context
        self.original_exception = error


class StatementInstrumentation(StatementTiming):
    def __init__(
        self, dialect: Dialect, state: PoolState, tracker: PoolTracker, settings: Settings
    ) -> None:
        super().__init__(state, tracker, settings, getattr(dialect, "name", "") or "")
        self._dialect = weakref.ref(dialect)

    @property
    def hooks(self) -> CursorHooks | None:
        hooks: CursorHooks | None = self.switch.hooks
        return hooks

    def set_cursor_hooks(self, hooks: CursorHooks | None) -> None:
        """Run ``hooks`` around every statement from now on (None: stop)."""
        self.switch.hooks = hooks

    def install(self) -> None:
        dialect = self._dialect()
        if dialect is None or self.switch.on:
            return
        self.switch.on = True
        originals = [(method, getattr(dialect, method)) for method in _METHODS]
        install_wrappers(
            dialect, self, [(method, fn, self._wrap(method, fn)) for method, fn in originals]
        )

    def uninstall(self) -> None:
        self.switch.on = False
        dialect = self._dialect()
        if dialect is None:
            return
        remove_wrappers(dialect, self, _METHODS)

    def _wrap(self, method: str, original: Callable[..., Any]) -> Callable[..., Any]:
        no_params = method == "do_execute_no_params"
        call = original
        if no_params:

            def call(cursor: Any, statement: str, parameters: Any, context: Any) -> Any:
                return original(cursor, statement, context)

        # A partial is a C call: no Python frame between the wrapper and _hooked.
        hooked = functools.partial(self._hooked, call, method == "do_executemany")
        return wrappers.execute_wrapper(
            original,
            self.switch,
            self,
            self._cache,
            self._series_for,
            hooked,
            self.slow_threshold,
            PENDING_LIMIT,
            no_params=no_params,
        )

    def _hooked(
        self,
        call: Callable[..., Any],
        many: bool,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
    ) -> Any:
        """The statement with the cursor-event listeners around it, each guarded: what they do
        is instrumentation, and the application's statement runs whatever they raise."""
        hooks = self.hooks
        series = self._cache.get(statement) or self._series_for(statement, context)
        sent, params = statement, parameters
        conn = getattr(context, "root_connection", None)
        if not _compat.autobegin_allowed(conn):
            # The dialect's first-connect set-up (server version, schema, ...): SQLAlchemy
            # runs it on a Connection with events off, so cursor listeners never see it.
            hooks = None
        if hooks is not None:
            try:
                sent, params = hooks.before(conn, cursor, statement, parameters, context, many)
            except Exception as e:
                self.state.errors.report("tracing", e)
                hooks = None
        t0 = time.perf_counter()
        try:
            result = call(cursor, sent, params, context)
        except BaseException as e:
            self._failed(series, statement, time.perf_counter() - t0, e)
            if hooks is not None and hooks.error is not None:
                try:
                    hooks.error(ExecutionError(context, e))
                except Exception as hook_error:
                    self.state.errors.report("tracing", hook_error)
            raise
        elapsed = time.perf_counter() - t0
        if hooks is not None:
            try:
                hooks.after(conn, cursor, sent, params, context, many)
            except Exception as e:
                self.state.errors.report("tracing", e)
        # StatementTiming._record's lines, inline: this runs per statement while tracing, and a
        # call to it would be one more per statement (as in hotpath.execute_wrapper).
        try:
            series.record(elapsed)
            if series.pending is not None and series.pending() > PENDING_LIMIT:
                series.drain()
            if self.slow_threshold is not None and elapsed >= self.slow_threshold:
                self._log_slow(series, statement, elapsed)
        except Exception as e:
            self.state.errors.report("statement", e)
        return result

    def _series_for(self, statement: str, context: Any) -> Series:
        try:
            return self._summarized(statement)
        except Exception as e:
            self.state.errors.report("statement", e)
            return self._series(OTHER)
