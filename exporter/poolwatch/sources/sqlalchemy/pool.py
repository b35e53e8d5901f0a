"""SQLAlchemy pool instrumentation: event listeners plus a wrapper around ``pool.connect``.

SQLAlchemy fires no event before a checkout, so waits, waiting callers and timeouts can only be
seen by wrapping the pool's public ``connect()``. ``engine.dispose()`` swaps in the pool returned
by the old pool's ``recreate()``, which is wrapped too, so the new pool is followed. (The
``engine_disposed`` event would say the same, but any engine-level event listener sets
``engine._has_events`` and sends every statement down SQLAlchemy's slower event path.)
Checkins are seen by wrapping the pool's ``_return_conn()``, which ``_ConnectionRecord.checkin()``
calls right after dispatching the ``checkin`` event and nowhere else: the same moment without the
event dispatch on every checkin, and the connection goes back into the pool before the hold time
is recorded, so a caller waiting for it does not wait for poolwatch. It is private API, so a pool
without it gets the ``checkin`` event instead. Everything else comes from pool events.

Gauges never drift because they are not counters: ``used`` is the set of checked-out records
(added by the wrapper, removed by ``checkin``/``detach``) and ``idle`` is the set of records with
an open connection (added by ``connect``, removed by ``close``/``detach``) minus the used ones.
``checkin`` fires before the record is back in the queue and ``invalidate``/``detach`` fire no
checkin; each is accounted for where it happens.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool, Pool, QueuePool, SingletonThreadPool, StaticPool

from poolwatch.core import build as wrappers
from poolwatch.core.errors import logger
from poolwatch.core.instrumentation import instrumented
from poolwatch.core.leaks import LeakDetector
from poolwatch.core.seams import CheckoutAccounting, install_wrappers, remove_wrappers
from poolwatch.core.server_probe import ServerProbe
from poolwatch.core.state import PoolLimits, PoolState
from poolwatch.core.tracker import NOTHING_PENDING, PENDING_LIMIT, PoolTracker
from poolwatch.sources.sqlalchemy import _compat
from poolwatch.sql.error_types import classify_connection_error, classify_error

__all__ = ["PoolInstrumentation", "pool_limits"]

_INVALIDATION_REASONS_MAX = 20
# The pool method every checkin ends in (SQLAlchemy 2.0 and 2.1); see the module docstring.
_WRAPPED_METHODS = ("connect", "recreate", _compat.RETURN_SEAM)


def pool_limits(pool: Pool) -> PoolLimits:
    """The pool's configuration. Private attributes are read defensively: absent means unknown."""
    cls = type(pool).__name__
    recycle = _compat.private(pool, "_recycle")
    common: dict[str, Any] = {
        "pool_class": cls,
        "recycle": None if recycle is None or recycle < 0 else float(recycle),
        "pre_ping": _compat.private(pool, "_pre_ping"),
    }
    if isinstance(pool, QueuePool):
        size = pool.size()
        max_overflow = _compat.private(pool, "_max_overflow")
        bounded = max_overflow is not None and max_overflow >= 0
        return PoolLimits(
            max=size + max_overflow if bounded and max_overflow is not None else None,
            idle_max=size if size > 0 else None,
            timeout=pool.timeout(),
            pool_size=size,
            max_overflow=max_overflow,
            **common,
        )
    if isinstance(pool, StaticPool):
        return PoolLimits(max=1, idle_max=1, **common)
    if isinstance(pool, SingletonThreadPool):
        thread_pool_size = getattr(pool, "size", None)
        return PoolLimits(
            pool_size=thread_pool_size if isinstance(thread_pool_size, int) else None, **common
        )
    if isinstance(pool, NullPool):
        return PoolLimits(idle_max=0, **common)
    return PoolLimits(**common)


class PoolInstrumentation(CheckoutAccounting):
    """Keeps one engine's :class:`PoolState` and feeds its :class:`PoolTracker`."""

    def __init__(
        self,
        engine: Engine,
        state: PoolState,
        tracker: PoolTracker,
        *,
        leaks: LeakDetector | None,
        on_wait: Callable[[float, float, BaseException | None], None] | None = None,
        probe: ServerProbe | None = None,
    ) -> None:
        super().__init__(state, tracker, leaks, on_wait)
        # Weak: the application owns the engine; dropping it must free it and its connections.
        self._engine = weakref.ref(engine)
        # Reads the server's connection limits on a connection being opened anyway.
        self.probe = probe
        self._listeners: list[tuple[str, Callable[..., Any]]] = []
        self._wrapped: list[weakref.ref[Pool]] = []
        self._pool: weakref.ref[Pool] = weakref.ref(engine.pool)
        self._return_seam = False
        self._reasons: set[str] = set()
        self._checked_creator = False
        self._disposed = False

    # -- lifecycle -------------------------------------------------------------------------
    def install(self) -> None:
        with self._lock:
            if self.switch.on:
                return
            self.switch.on = True
            engine = self._engine()
            if engine is None:
                return
            _compat.check()
            self._return_seam = _compat.has_return_seam(engine.pool)
            if not self._return_seam:
                self._listen(engine, "checkin", self._checkin_listener())
            self._listen(engine, "connect", self._on_connect)
            self._listen(engine, "close", self._on_close)
            self._listen(engine, "detach", self._on_detach)
            self._listen(engine, "invalidate", self._on_invalidate)
            self._listen(engine, "soft_invalidate", self._on_soft_invalidate)
            self._wrap(engine.pool)
            self._adopt_idle(engine.pool)

    def uninstall(self) -> None:
        with self._lock:
            if not self.switch.on:
                return
            self.switch.on = False
            engine = self._engine()
            for name, fn in self._listeners:
                try:
                    if engine is not None and event.contains(engine, name, fn):
                        event.remove(engine, name, fn)
                except Exception as e:
                    self.state.errors.report("uninstrument", e)
            self._listeners.clear()
            for ref in self._wrapped:
                pool = ref()
                if pool is not None:
                    remove_wrappers(pool, self, _WRAPPED_METHODS)
            self._wrapped.clear()

    def _adopt_idle(self, pool: Pool) -> None:
        """Connections the pool opened before ``instrument()`` fired no ``connect`` event for
        us: the idle ones are counted from the pool's queue (private API, read defensively).
        One checked out at this moment is counted once it comes back
        (:meth:`PoolState.returned_unknown`)."""
        try:
            for record in _compat.idle_records(pool):
                self.state.live.add(record)
        except Exception as e:
            self.state.errors.report("install", e)

    def disposed_unused(self) -> bool:
        """``engine.dispose()`` was called and the engine has opened and checked out nothing since
        (the usual end of an engine the application is about to drop)."""
        return self._disposed and not self.state.live and not self.state.checked_out

    def limits(self) -> PoolLimits:
        pool = self._pool()
        return pool_limits(pool) if pool is not None else PoolLimits(pool_class="")

    def _listen(self, target: Engine, name: str, fn: Callable[..., Any]) -> None:
        event.listen(target, name, fn)
        self._listeners.append((name, fn))

    # -- the checkout path ------------------------------------------------------------------
    def _wrap(self, pool: Pool) -> None:
        self._pool = weakref.ref(pool)
        if any(ref() is pool for ref in self._wrapped):
            return
        connect = pool.connect
        # The tracker's recorders are fixed for its life: the wrapper holds them, not the
        # tracker (see poolwatch.core.hotpath).
        poolwatch_connect = wrappers.checkout_wrapper(
            connect,
            self.switch,
            self,
            self.tracker.wait,
            None if self.tracker.pending is NOTHING_PENDING else self.tracker.pending,
            self.tracker.drain,
            PENDING_LIMIT,
            sa_exc.TimeoutError,
        )
        instrumentation = self

        recreate = pool.recreate

        def poolwatch_recreate() -> Pool:
            new_pool = recreate()
            if instrumentation.switch.on:
                instrumentation._follow(new_pool)
            return new_pool

        replaced: list[tuple[str, Callable[..., Any], Any]] = [
            ("connect", connect, poolwatch_connect),
            ("recreate", recreate, poolwatch_recreate),
        ]
        if self._return_seam:
            return_conn = getattr(pool, _compat.RETURN_SEAM)
            replaced.append((_compat.RETURN_SEAM, return_conn, self._return_wrapper(return_conn)))
        install_wrappers(pool, self, replaced)
        self._wrapped.append(weakref.ref(pool))

    def _return_wrapper(self, return_conn: Callable[[Any], None]) -> Callable[[Any], None]:
        return wrappers.checkin_wrapper(return_conn, self.switch, self, self.tracker.use)

    def _checkout_error(self, error: BaseException) -> None:
        # Not a timeout: opening a new connection failed (a KeyboardInterrupt is not counted).
        if isinstance(error, Exception):
            self.tracker.connection_error(classify_connection_error(error))

    # -- pool events --------------------------------------------------------------------------
    def _checkin_listener(self) -> Callable[[Any, Any], None]:
        # For pools without the _return_conn seam: the same accounting, run from the checkin
        # event (the pool returns the record itself right after it).
        account = self._return_wrapper(_nothing)

        def on_checkin(dbapi_connection: Any, record: Any) -> None:
            account(record)

        return on_checkin

    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        try:
            if not self._checked_creator:
                self._check_creator(dbapi_connection)
            self.state.live.add(record)
            # last_connect_time is set just before the DBAPI connect call; this listener runs
            # after it (and after the dialect's own on-connect set-up, which is part of making
            # a usable connection).
            started = record.last_connect_time
            if started:
                self.tracker.created(max(0.0, time.time() - started))
            if self.probe is not None:
                self.probe.maybe_read(dbapi_connection)
        except Exception as e:
            self.state.errors.report("connect", e)

    def _check_creator(self, dbapi_connection: Any) -> None:
        """``create_engine(creator=pool.getconn)``: the connections come from a psycopg_pool
        pool, whose limit and timeouts are the real ones (psycopg sets ``_pool`` on a connection
        it hands out). Said once per engine, and only if that pool is not instrumented."""
        self._checked_creator = True
        owner = getattr(dbapi_connection, "_pool", None)
        if owner is None or not type(owner).__module__.startswith("psycopg_pool"):
            return
        pool = self._pool()
        creator = getattr(pool, "_creator", None) if pool is not None else None
        if instrumented(owner) is not None:
            if getattr(creator, "__self__", None) is owner:
                # creator=pool.getconn evaluated before instrument(): the bound method of the
                # class, which the instance's wrapper never sees.
                logger.warning(
                    "poolwatch: the engine of pool %r was given creator=%r.getconn before that "
                    "psycopg_pool was instrumented, so its checkouts are not seen; instrument "
                    "the psycopg_pool first, or pass creator=lambda: pool.getconn()",
                    self.state.name,
                    getattr(owner, "name", "?"),
                )
        else:
            logger.warning(
                "poolwatch: the connections of pool %r come from the psycopg_pool %r, which is "
                "not instrumented: its max_size, timeouts and waits are the real limit; call "
                "poolwatch.instrument() on that pool too (README, 'psycopg_pool')",
                self.state.name,
                getattr(owner, "name", "?"),
            )

    def _on_close(self, dbapi_connection: Any, record: Any) -> None:
        try:
            self.state.live.discard(record)
        except Exception as e:
            self.state.errors.report("close", e)

    def _on_detach(self, dbapi_connection: Any, record: Any) -> None:
        try:
            self.state.live.discard(record)
            t0 = self.state.checked_out.pop(record, None)
            if t0 is not None:
                self.tracker.use(time.perf_counter() - t0)
            if self.leaks is not None:
                self.leaks.checked_in(record, t0)
        except Exception as e:
            self.state.errors.report("detach", e)

    def _on_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        try:
            kind = "pre_ping" if isinstance(exception, sa_exc.InvalidatePoolError) else "hard"
            self.tracker.invalidated(kind, self._reason(exception))
        except Exception as e:
            self.state.errors.report("invalidate", e)

    def _on_soft_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        try:
            self.tracker.invalidated("soft", self._reason(exception))
        except Exception as e:
            self.state.errors.report("invalidate", e)

    def _reason(self, exception: BaseException | None) -> str:
        if exception is None:
            return "none"
        reason = classify_error(exception)
        if reason in self._reasons:
            return reason
        if len(self._reasons) >= _INVALIDATION_REASONS_MAX:
            return "other"
        self._reasons.add(reason)
        return reason

    def _follow(self, pool: Pool) -> None:
        """The engine is swapping in ``pool`` (``engine.dispose()``)."""
        try:
            self.state.disown_current_records()
            self._disposed = True
            with self._lock:
                if self.switch.on:
                    self._wrap(pool)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("poolwatch: following the new pool of %r", self.state.name)
        except Exception as e:
            self.state.errors.report("dispose", e)


def _nothing(record: Any) -> None:
    pass
