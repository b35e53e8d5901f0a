"""psycopg_pool pools: wrappers on the instance's ``getconn``, ``putconn``, ``_connect`` and
``close``.

``connection()`` gets and returns its connection through ``self.getconn``/``self.putconn``, so the
two public methods, wrapped on the instance, see every checkout and checkin, in the caller's
thread or task: the wait (including the pool's ``check`` callback), the waiting callers, the
timeouts (``PoolTimeout``), the ``max_waiting`` refusals (``TooManyRequests``, counted apart) and
the hold time. New connections are opened by ``_connect`` (private, through :mod:`._compat`), in
a worker for the pools and in ``getconn`` for the null pools: its wrapper times the connect
(with the application's ``configure``), counts the failures by error type and adds the
connection to ``live``. ``close()`` ends the instrumentation, so a closed pool leaves no series.

Gauges: ``used`` is the set of checked-out connections; ``idle`` is the open connections the pool
made (``live``, weakly held) minus the used ones. Before each collection ``live`` loses every
connection that is closed now, however the pool got rid of it (expired, shrunk, drained, broken,
reset failed, pool closed), so nothing has to be seen at the moment it happens. The pool's own
counters of bad returns and lost connections (``get_stats()``) become invalidations.
"""

from __future__ import annotations

import inspect
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from psycopg_pool import (
    AsyncConnectionPool,
    AsyncNullConnectionPool,
    NullConnectionPool,
    PoolClosed,
    PoolTimeout,
    TooManyRequests,
)

from poolwatch.core import build as wrappers
from poolwatch.core.leaks import LeakDetector
from poolwatch.core.server_probe import ServerProbe
from poolwatch.core.state import PoolLimits, PoolState
from poolwatch.core.tracker import NOTHING_PENDING, PENDING_LIMIT, PoolTracker
from poolwatch.sources.psycopg_pool import _compat
from poolwatch.sql.error_types import classify_connection_error

__all__ = ["TOO_MANY_REQUESTS", "PsycopgPoolInstrumentation", "pool_limits"]

TOO_MANY_REQUESTS = "too_many_requests"
# get_stats() counters that become invalidations: (stats key, kind, reason).
_INVALIDATIONS = (("returns_bad", "hard", "bad_return"), ("connections_lost", "hard",
                  "connection_lost"))  # fmt: skip
_WRAPPED = ("getconn", "putconn", "close", _compat.CONNECT_SEAM)


def pool_limits(pool: Any) -> PoolLimits:
    null = isinstance(pool, (NullConnectionPool, AsyncNullConnectionPool))
    max_size = pool.max_size
    return PoolLimits(
        pool_class=type(pool).__name__,
        # A null pool with max_size=0 opens as many connections as it is asked for.
        max=None if null and max_size == 0 else max_size,
        # A pool keeps up to max_size idle until max_idle shrinks it back to min_size; a null
        # pool closes every returned connection nobody is waiting for.
        idle_max=0 if null else max_size,
        idle_min=pool.min_size,
        timeout=float(pool.timeout),
        min_size=pool.min_size,
        max_size=max_size,
        max_waiting=pool.max_waiting,
        max_lifetime=float(pool.max_lifetime),
        max_idle=float(pool.max_idle),
    )


class PsycopgPoolInstrumentation:
    """Keeps one psycopg_pool pool's :class:`PoolState` and feeds its :class:`PoolTracker`."""

    def __init__(
        self,
        pool: Any,
        state: PoolState,
        tracker: PoolTracker,
        *,
        leaks: LeakDetector | None,
        on_wait: Callable[[float, float, BaseException | None], None] | None,
        on_connect: Callable[[Any], None] | None = None,
        on_close: Callable[[], None] | None = None,
        probe: ServerProbe | None = None,
    ) -> None:
        self._pool = weakref.ref(pool)
        self.state = state
        self.tracker = tracker
        self.leaks = leaks
        self.on_wait = on_wait
        # A new connection (the statement seam derives its cursor class), and the pool closed.
        self._on_connect = on_connect
        self._on_close = on_close
        self._probe = probe
        self.is_async = isinstance(pool, AsyncConnectionPool)
        self.switch = wrappers.Switch()
        self._lock = threading.Lock()
        self._connect_seam = False
        self._stats_seen: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def install(self) -> None:
        with self._lock:
            pool = self._pool()
            if pool is None or self.switch.on:
                return
            self.switch.on = True
            self.state.refresh = self.refresh
            self._stats_seen = self._counters(pool)
            connect = _compat.connect_seam(pool)
            self._connect_seam = connect is not None
            replaced: list[tuple[str, Callable[..., Any], Any]] = [
                ("getconn", pool.getconn, self._getconn_wrapper(pool.getconn)),
                ("putconn", pool.putconn, self._putconn_wrapper(pool.putconn)),
                ("close", pool.close, self._close_wrapper(pool.close)),
            ]
            if connect is not None:
                replaced.append((_compat.CONNECT_SEAM, connect, self._connect_wrapper(connect)))
            for method, original, wrapper in replaced:
                wrapper.__wrapped__ = original
                wrapper._poolwatch = self
                setattr(pool, method, wrapper)
            for conn in _compat.idle_connections(pool):
                self._adopt(conn)

    def uninstall(self) -> None:
        with self._lock:
            if not self.switch.on:
                return
            self.switch.on = False
            self.state.refresh = None
            pool = self._pool()
            if pool is None:
                return
            for method in _WRAPPED:
                # Only our own wrapper: one wrapped again by someone else stays, inert.
                if getattr(pool.__dict__.get(method), "_poolwatch", None) is self:
                    del pool.__dict__[method]

    def limits(self) -> PoolLimits:
        pool = self._pool()
        return pool_limits(pool) if pool is not None else PoolLimits(pool_class="")

    def _adopt(self, conn: Any) -> None:
        """Prepare a connection no seam saw opening: the idle ones at ``instrument()``, and at
        its first checkout one the pool was opening while ``instrument()`` ran (its ``_connect``
        began before the wrapper was in place) or opened without the connect seam."""
        self._mark(conn)
        if not conn.closed:
            self.state.live.add(conn)
            if self._on_connect is not None:
                self._on_connect(conn)

    def _mark(self, conn: Any) -> None:
        # What the checkout wrapper compares: this instrumentation's switch, so a connection
        # of an earlier instrumentation of the pool is prepared again.
        try:
            setattr(conn, wrappers.SEEN, self.switch)
        except AttributeError:
            pass  # a connection class without a __dict__: prepared again at each checkout

    def _unseen(self, conn: Any) -> None:
        try:
            self._adopt(conn)
        except Exception as e:
            self.state.errors.report("checkout", e)

    # -- collection time -------------------------------------------------------------------
    def refresh(self) -> None:
        """Before the gauges are read: forget closed connections, count what the pool's own
        counters saw since the last collection."""
        live = self.state.live
        for conn in list(live):
            if conn.closed:
                live.discard(conn)
        pool = self._pool()
        if pool is None:
            return
        counters = self._counters(pool)
        for key, kind, reason in _INVALIDATIONS:
            now, before = counters.get(key, 0), self._stats_seen.get(key, 0)
            # pop_stats() by the application starts the counters over.
            for _ in range(now - before if now >= before else now):
                self.tracker.invalidated(kind, reason)
        self._stats_seen = counters

    @staticmethod
    def _counters(pool: Any) -> dict[str, int]:
        stats = pool.get_stats()
        return {key: int(stats.get(key, 0)) for key, _, _ in _INVALIDATIONS}

    # -- the checkout path ------------------------------------------------------------------
    def _getconn_wrapper(self, getconn: Callable[..., Any]) -> Callable[..., Any]:
        t = self.tracker
        pending = None if t.pending is NOTHING_PENDING else t.pending
        if self.is_async:
            return wrappers.async_checkout_wrapper(
                getconn, self.switch, self, t.wait, pending, t.drain, PENDING_LIMIT, PoolTimeout,
                self._unseen,
            )  # fmt: skip
        return wrappers.checkout_wrapper(
            getconn, self.switch, self, t.wait, pending, t.drain, PENDING_LIMIT, PoolTimeout,
            None, self._unseen,
        )  # fmt: skip

    def _putconn_wrapper(self, putconn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if self.is_async:
            return wrappers.async_checkin_wrapper(putconn, self.switch, self, self.tracker.use)
        return wrappers.checkin_wrapper(putconn, self.switch, self, self.tracker.use)

    def _checkout_failed(
        self, t0: float, slot: int, error: BaseException, *, timed_out: bool
    ) -> None:
        t1 = time.perf_counter()
        try:
            self.state.stop_waiting(slot)
            if timed_out:
                self.tracker.wait(self._timed_out_wait(t1 - t0))
                if self.tracker.pending() > PENDING_LIMIT:
                    self.tracker.drain()
                self.tracker.timed_out()
            elif isinstance(error, TooManyRequests):
                self.tracker.connection_error(TOO_MANY_REQUESTS)
            elif isinstance(error, PoolClosed) or (
                isinstance(error, Exception) and not self._connect_seam
            ):
                # A failed connect (null pools connect in getconn) was counted by the connect
                # seam already.
                self.tracker.connection_error(classify_connection_error(error))
            if self.on_wait is not None:
                self.on_wait(t0, t1, error)
        except Exception as e:
            self.state.errors.report("checkout", e)

    def _timed_out_wait(self, elapsed: float) -> float:
        """As for SQLAlchemy (see its ``_timed_out_wait``): a wait that gave up at the pool's
        timeout is recorded as the timeout, so it lands in the bucket the timeout bounds."""
        timeout = self.limits().timeout
        if timeout is not None and timeout <= elapsed <= timeout + 1.0:
            return timeout
        return elapsed

    # -- new connections, close -----------------------------------------------------------------
    def _opened(self, conn: Any, seconds: float, *, probe: bool = True) -> None:
        try:
            self._mark(conn)
            self.state.live.add(conn)
            self.tracker.created(seconds)
            if probe and self._probe is not None:
                # Before the statement seam: the probe's own query is not the application's.
                self._probe.maybe_read(conn)
            if self._on_connect is not None:
                self._on_connect(conn)
        except Exception as e:
            self.state.errors.report("connect", e)

    async def _probe_async(self, conn: Any) -> None:
        """The server probe on a new async connection, awaited in the pool's own connect (a
        worker task, or a null pool's ``getconn``): on the event loop, without blocking it, on
        a connection nobody else has yet. Never raises, except a cancellation, after which the
        connection is closed (the pool never got it)."""
        if self._probe is None:
            return
        try:
            await self._probe.maybe_read_async(conn)
        except Exception as e:
            self.state.errors.report("connect", e)
        except BaseException:
            try:
                await conn.close()
            except BaseException:
                pass
            raise

    def _connect_failed(self, error: BaseException) -> None:
        try:
            if isinstance(error, Exception):
                self.tracker.connection_error(classify_connection_error(error))
        except Exception as e:
            self.state.errors.report("connect", e)

    def _connect_wrapper(self, connect: Callable[..., Any]) -> Callable[..., Any]:
        switch = self.switch
        if inspect.iscoroutinefunction(connect):

            async def poolwatch_connect_async(timeout: float | None = None) -> Any:
                if not switch.on:
                    return await connect(timeout)
                t0 = time.perf_counter()
                try:
                    conn = await connect(timeout)
                except BaseException as e:
                    self._connect_failed(e)
                    raise
                seconds = time.perf_counter() - t0
                await self._probe_async(conn)
                self._opened(conn, seconds, probe=False)
                return conn

            return poolwatch_connect_async

        def poolwatch_connect(timeout: float | None = None) -> Any:
            if not switch.on:
                return connect(timeout)
            t0 = time.perf_counter()
            try:
                conn = connect(timeout)
            except BaseException as e:
                self._connect_failed(e)
                raise
            self._opened(conn, time.perf_counter() - t0)
            return conn

        return poolwatch_connect

    def _close_wrapper(self, close: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(close):

            async def poolwatch_close_async(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await close(*args, **kwargs)
                finally:
                    self._closed()

            return poolwatch_close_async

        def poolwatch_close(*args: Any, **kwargs: Any) -> Any:
            try:
                return close(*args, **kwargs)
            finally:
                self._closed()

        return poolwatch_close

    def _closed(self) -> None:
        pool = self._pool()
        if self.switch.on and pool is not None and pool.closed and self._on_close is not None:
            try:
                self._on_close()
            except Exception as e:
                self.state.errors.report("close", e)
