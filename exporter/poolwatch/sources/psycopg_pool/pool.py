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

import asyncio
import inspect
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
from poolwatch.core.seams import CheckoutAccounting, install_wrappers, remove_wrappers
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


class PsycopgPoolInstrumentation(CheckoutAccounting):
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
        super().__init__(state, tracker, leaks, on_wait)
        self._pool = weakref.ref(pool)
        # A new connection (the statement seam derives its cursor class), and the pool closed.
        self._on_connect = on_connect
        self._on_close = on_close
        self._probe = probe
        self.is_async = isinstance(pool, AsyncConnectionPool)
        self._connect_seam = False
        self._stats_seen: dict[str, int] = {}
        # Set while the pool may hold a connection no seam saw opening (see _settle): the
        # checkout wrapper then checks each connection it hands over.
        self.unsure = wrappers.Flag()

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
            install_wrappers(pool, self, replaced)
            # A pool not open yet (or closed) has no connection out or opening: all of its
            # connections will come through the connect seam.
            self.unsure.value = not (self._connect_seam and pool.closed)
            self._settle(pool, in_loop=self._in_event_loop())

    def uninstall(self) -> None:
        with self._lock:
            if not self.switch.on:
                return
            self.switch.on = False
            self.state.refresh = None
            pool = self._pool()
            if pool is None:
                return
            remove_wrappers(pool, self, _WRAPPED)

    def limits(self) -> PoolLimits:
        pool = self._pool()
        return pool_limits(pool) if pool is not None else PoolLimits(pool_class="")

    def _adopt(self, conn: Any) -> None:
        """Prepare a connection no seam saw opening: the idle ones at ``instrument()``, and at
        its first checkout (or found idle by :meth:`_settle`) one the pool was opening while
        ``instrument()`` ran (its ``_connect`` began before the wrapper was in place), had out
        then, or opened without the connect seam."""
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
        """A checkout, while ``unsure``, of a connection no seam prepared: in the caller's
        thread (an async pool's: its event loop's, where the pool can be read still)."""
        try:
            self._adopt(conn)
            pool = self._pool()
            if pool is not None:
                self._settle(pool, in_loop=self.is_async)
        except Exception as e:
            self.state.errors.report("checkout", e)

    def _settle(self, pool: Any, *, in_loop: bool) -> None:
        """While ``unsure``: prepare the idle connections no seam saw opening, and clear
        ``unsure`` once the pool provably has no other: every connection it counts as out
        (checked out, or opening) is one the checkout wrapper recorded and poolwatch prepared.
        The wrapper records a checkout after the pool's ``getconn`` returns and forgets it
        before ``putconn``, so what it holds is always a part of what the pool counts as out,
        and the two are equal only when there is nothing else. Read with the pool's state still:
        a sync pool's lock held, or an async pool's event loop running this (``in_loop``).
        Otherwise (an async pool, from the collector's thread) the idle ones are only counted,
        and prepared at their checkout, on the loop, which settles again. A version without the
        connect seam stays unsure."""
        if not self.unsure.value:
            return
        switch = self.switch
        lock = None if self.is_async else _compat.pool_lock(pool)
        steady = in_loop or lock is not None
        proven = False
        if lock is not None:
            lock.acquire()
        try:
            idle = _compat.idle_connections(pool)
            if steady:
                stats = pool.get_stats()
                out = list(self.state.checked_out)
                proven = (
                    len(idle) == stats.get("pool_available", -1)
                    and len(out) == stats.get("pool_size", -1) - len(idle)
                    and all(getattr(conn, wrappers.SEEN, None) is switch for conn in out)
                )
        finally:
            if lock is not None:
                lock.release()
        for conn in idle:
            if getattr(conn, wrappers.SEEN, None) is switch:
                continue
            if steady:
                self._adopt(conn)
            elif not conn.closed:
                self.state.live.add(conn)
        if proven and self._connect_seam:
            self.unsure.value = False

    def _in_event_loop(self) -> bool:
        """Whether this thread runs an event loop now (an async pool's, instrumented from a
        coroutine)."""
        if not self.is_async:
            return False
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

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
        if self.unsure.value:
            try:
                self._settle(pool, in_loop=False)
            except Exception as e:
                self.state.errors.report("collect", e)
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
                self._unseen, self.unsure,
            )  # fmt: skip
        return wrappers.checkout_wrapper(
            getconn, self.switch, self, t.wait, pending, t.drain, PENDING_LIMIT, PoolTimeout,
            None, self._unseen, self.unsure,
        )  # fmt: skip

    def _putconn_wrapper(self, putconn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if self.is_async:
            return wrappers.async_checkin_wrapper(putconn, self.switch, self, self.tracker.use)
        return wrappers.checkin_wrapper(putconn, self.switch, self, self.tracker.use)

    def _checkout_error(self, error: BaseException) -> None:
        if isinstance(error, TooManyRequests):
            self.tracker.connection_error(TOO_MANY_REQUESTS)
        elif isinstance(error, PoolClosed) or (
            isinstance(error, Exception) and not self._connect_seam
        ):
            # A failed connect (null pools connect in getconn) was counted by the connect
            # seam already.
            self.tracker.connection_error(classify_connection_error(error))

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
