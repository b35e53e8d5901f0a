"""psycopg_pool pools as a :class:`poolwatch.core.instrumentation.Source`.

A pool gets two seams: its own methods (:mod:`.pool`) and the cursor class of each of its
connections (:mod:`.statements`).
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from poolwatch.core.instrumentation import (
    Instrumentation,
    TelemetryFactory,
    instrument_source,
    instrumented,
    uninstrument_target,
)
from poolwatch.core.naming import DEFAULT_PORTS, semconv_pool_name
from poolwatch.core.server_probe import ServerProbe
from poolwatch.core.state import PoolLimits
from poolwatch.sources.psycopg_pool import _compat
from poolwatch.sources.psycopg_pool.application_name import NamedKwargs, set_application_name
from poolwatch.sources.psycopg_pool.pool import PsycopgPoolInstrumentation
from poolwatch.sources.psycopg_pool.statements import PsycopgStatements
from poolwatch.sql.server_limits import read_server_limits, read_server_limits_async

if TYPE_CHECKING:
    from poolwatch.sources.psycopg_pool.tracing import PsycopgTracing

__all__ = [
    "PsycopgPoolSource",
    "accepts",
    "default_pool_name",
    "instrument_pool",
    "instrumented_pool",
    "uninstrument_pool",
]

KIND = "psycopg_pool"


def accepts(target: Any) -> bool:
    # The null pools are subclasses of these two.
    return isinstance(target, (ConnectionPool, AsyncConnectionPool))


def server_of(pool: Any) -> tuple[str | None, int | None, str | None]:
    """``(host, port, dbname)`` from the pool's conninfo and kwargs (semconv ``server.address``,
    ``server.port``, ``db.namespace``). A conninfo or kwargs given as a callable is not called:
    it may fetch credentials."""
    conninfo = pool.conninfo if isinstance(pool.conninfo, str) else ""
    kwargs = pool.kwargs if isinstance(pool.kwargs, dict) else {}
    try:
        params = conninfo_to_dict(conninfo, **kwargs)
    except Exception:
        params = {}
    host = _first(params.get("host") or params.get("hostaddr"))
    port = _first(params.get("port"))
    dbname = str(params["dbname"]) if params.get("dbname") else None
    number = int(port) if port and port.isdigit() else None
    return host, (number or DEFAULT_PORTS["postgresql"]) if host else None, dbname


def default_pool_name(pool: Any) -> str:
    """The pool's own ``name=`` if the application gave one; else ``host:port/dbname`` from its
    conninfo and kwargs (never the user or the password)."""
    explicit = _compat.explicit_name(pool)
    if explicit is not None:
        return explicit
    return semconv_pool_name("postgresql", *server_of(pool))


def _first(value: object) -> str | None:
    """The first of a multi-host list (``h1,h2``)."""
    if value is None or value == "":
        return None
    return str(value).split(",")[0] or None


class PsycopgPoolSource:
    kind = KIND
    db_system = "postgresql"

    def __init__(self, pool: Any) -> None:
        self._target = weakref.ref(pool)
        self._name = default_pool_name(pool)
        self._server = server_of(pool)
        self._pool: PsycopgPoolInstrumentation | None = None
        self._statements: PsycopgStatements | None = None
        self._tracing: PsycopgTracing | None = None
        self._named: NamedKwargs | None = None

    def target(self) -> Any:
        return self._target()

    def default_name(self) -> str:
        return self._name

    def limits(self) -> PoolLimits:
        pool = self._pool
        limits = pool.limits() if pool is not None else PoolLimits(pool_class="")
        host, port, dbname = self._server
        return dataclasses.replace(
            limits, server_address=host, server_port=port, db_namespace=dbname
        )

    def released(self) -> bool:
        target = self._target()
        return target is not None and bool(target.closed) and bool(getattr(target, "_opened", 0))

    def install(self, inst: Instrumentation) -> None:
        target = self._target()
        if target is None:
            return
        settings = inst.settings
        inst.state.is_open = _is_open
        if settings.application_name is not False:
            wanted = inst.name if settings.application_name is True else settings.application_name
            self._named = set_application_name(target, inst.name, wanted)
        probe = None
        if settings.server_limits:
            # Read on a connection the pool opens anyway, before the pool has it; an async
            # pool's connect awaits the async read on its own loop.
            probe = ServerProbe(inst.state, self.db_system, semconv_pool_name(
                "postgresql", *self._server), _read_limits, _read_limits_async)
        if settings.statement_metrics:
            self._statements = PsycopgStatements(
                inst.state,
                inst.tracker,
                max_summaries=settings.max_query_summaries,
                slow_threshold=settings.slow_query_threshold,
            )
            self._statements.install()
        on_connect = self._statements.adopt if self._statements is not None else None
        if inst.telemetry.tracing is not None:
            from poolwatch.sources.psycopg_pool.tracing import PsycopgTracing

            inst.telemetry.tracing.timeout_errors = (psycopg_pool.PoolTimeout,)
            self._tracing = PsycopgTracing(inst.telemetry.tracing, inst.state)
            timed, traced = on_connect, self._tracing.adopt

            def on_connect(conn: Any) -> None:
                # Timed first: OpenTelemetry's class then derives from poolwatch's.
                if timed is not None:
                    timed(conn)
                traced(conn)

        handle = weakref.ref(inst)

        def closed() -> None:
            current = handle()
            if current is not None:
                current.uninstrument()

        self._pool = PsycopgPoolInstrumentation(
            target,
            inst.state,
            inst.tracker,
            leaks=inst.leaks,
            on_wait=inst.on_wait,
            on_connect=on_connect,
            on_close=closed,
            probe=probe,
        )
        self._pool.install()

    def uninstall(self) -> None:
        target = self._target()
        if self._named is not None and target is not None:
            self._named.restore(target)
        if self._pool is not None:
            self._pool.uninstall()
        if self._tracing is not None:
            self._tracing.uninstall()
        if self._statements is not None:
            self._statements.uninstall()


class _PlainCursors:
    """The connection as the probe sees it: psycopg's own cursor with tuple rows, whatever
    ``cursor_factory`` and ``row_factory`` the application gave the connection."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def cursor(self) -> Any:
        return psycopg.Cursor(self._conn, row_factory=tuple_row)

    def rollback(self) -> None:
        self._conn.rollback()


class _PlainAsyncCursors(_PlainCursors):
    def cursor(self) -> Any:
        return psycopg.AsyncCursor(self._conn, row_factory=tuple_row)

    async def rollback(self) -> None:  # type: ignore[override]
        await self._conn.rollback()


def _read_limits(conn: Any, db_system: str) -> Any:
    return read_server_limits(_PlainCursors(conn), db_system)


async def _read_limits_async(conn: Any, db_system: str) -> Any:
    return await read_server_limits_async(_PlainAsyncCursors(conn), db_system)


def _is_open(conn: Any) -> bool:
    return not conn.closed


def instrument_pool(
    target: Any, overrides: dict[str, Any], telemetry: TelemetryFactory, *, automatic: bool = False
) -> Instrumentation:
    if not accepts(target):
        raise TypeError(
            f"poolwatch: not a psycopg_pool pool: {type(target).__name__}"
        )
    _compat.check_version(psycopg_pool.__version__)
    if target.closed and getattr(target, "_opened", False):
        raise ValueError(
            f"poolwatch: the pool {target.name!r} is closed; instrument() accepts an open pool "
            "or one not opened yet"
        )
    return instrument_source(
        target, lambda: PsycopgPoolSource(target), overrides, telemetry, automatic=automatic
    )


def uninstrument_pool(target: Any) -> bool:
    return uninstrument_target(target)


def instrumented_pool(target: Any) -> Instrumentation | None:
    return instrumented(target)
