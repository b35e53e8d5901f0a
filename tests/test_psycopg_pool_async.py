"""AsyncConnectionPool and AsyncNullConnectionPool: the same metrics, and a task cancelled while it
waits leaves no waiter and no used connection behind."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, AsyncNullConnectionPool, PoolTimeout, TooManyRequests

import poolwatch
from tests.support.pools import Reader, app_name, server_connections
from tests.support.psycopg import conninfo


async def settle(predicate: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_async_pool(postgres_url, registry, build):
    name = app_name()

    async def main() -> None:
        pool = AsyncConnectionPool(conninfo(postgres_url), min_size=1, max_size=2, timeout=5,
                                   max_waiting=1, kwargs={"application_name": name}, open=False)
        await pool.open(wait=True)
        handle = poolwatch.instrument(pool, registry=registry)
        m = Reader(registry, handle.name)
        try:
            assert (m.used, m.idle) == (0, 1)
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
                cur = conn.cursor()
                await cur.executemany("SELECT %s", [(1,), (2,)])
                with pytest.raises(psycopg.errors.DivisionByZero):
                    await conn.execute("SELECT 1 / 0")
                assert (m.used, m.idle) == (1, 0)
            assert (m.used, m.idle) == (0, 1)
            assert server_connections(postgres_url, name) == 1
            op = "db_client_operation_duration_seconds_count"
            labels = {"db_system_name": "postgresql", "db_operation_name": "SELECT",
                      "db_query_summary": "SELECT"}
            assert m(op, error_type="", **labels) == 2
            assert m(op, error_type="data_exception", **labels) == 1

            a, b = await pool.getconn(), await pool.getconn()
            assert (m.used, m.idle) == (2, 0)
            waiter = asyncio.ensure_future(pool.getconn())
            await settle(lambda: pool.get_stats()["requests_waiting"] == 1)
            assert m.pending == 1
            with pytest.raises(TooManyRequests):
                await pool.getconn()
            waiter.cancel()  # cancelled while waiting in getconn
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert m.pending == 0 and (m.used, m.idle) == (2, 0)
            # The cancelled request stays in psycopg_pool's queue until a connection comes back.
            await pool.putconn(a)
            a = await pool.getconn()
            with pytest.raises(PoolTimeout):
                await pool.getconn(timeout=0.05)
            await pool.putconn(a)
            await pool.putconn(b)
            await settle(lambda: (m.used, m.idle) == (0, 2))
            assert server_connections(postgres_url, name) == 2
            stats = pool.get_stats()
            assert (stats["pool_size"], stats["pool_available"]) == (2, 2)
            assert m("db_client_connection_timeouts_total") == 1
            assert m("poolwatch_connection_errors_total", error_type="too_many_requests") == 1
            assert m("db_client_connection_use_time_seconds_count") == 4
        finally:
            await pool.close()
        assert not handle.active and m.used is None

    asyncio.run(main())


def test_async_null_pool(postgres_url, registry, build):
    name = app_name()

    async def main() -> None:
        pool = AsyncNullConnectionPool(conninfo(postgres_url), max_size=2,
                                       kwargs={"application_name": name}, open=False)
        await pool.open()
        handle = poolwatch.instrument(pool, registry=registry)
        m = Reader(registry, handle.name)
        try:
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
                assert (m.used, m.idle) == (1, 0)
                assert server_connections(postgres_url, name) == 1
            assert (m.used, m.idle) == (0, 0)
            assert server_connections(postgres_url, name) == 0
            assert m("db_client_connection_create_time_seconds_count") == 1
            assert m("db_client_connection_max") == 2
            assert m("db_client_connection_idle_max") == 0
        finally:
            await pool.close()

    asyncio.run(main())


def test_an_async_pool_instrumented_off_its_loop_is_settled_on_it(postgres_url, registry, build):
    """instrument() from a thread that runs no event loop, with a connection out: the idle
    connections are counted at once and prepared at their checkout, on the loop, where the pool
    can be read still; the check for unseen connections then stops."""
    name = app_name()

    async def main() -> None:
        pool = AsyncConnectionPool(conninfo(postgres_url), min_size=2, max_size=2,
                                   kwargs={"application_name": name}, open=False)
        await pool.open(wait=True)
        try:
            early = await pool.getconn()
            handle = await asyncio.to_thread(poolwatch.instrument, pool, registry=registry)
            checks = pool.__dict__["getconn"]._poolwatch.unsure
            m = Reader(registry, handle.name)
            assert checks.value
            assert (m.used, m.idle) == (0, 1)  # the early one is not counted until it is back
            await pool.putconn(early)
            assert (m.used, m.idle) == (0, 2) and checks.value
            a, b = await pool.getconn(), await pool.getconn()
            assert not checks.value  # both prepared at their checkout, and nothing else out
            for conn in (a, b):
                await conn.execute("SELECT 1")
            assert m("db_client_operation_duration_seconds_count", db_system_name="postgresql",
                     db_operation_name="SELECT", db_query_summary="SELECT", error_type="") == 2
            assert (m.used, m.idle) == (2, 0)
            for conn in (a, b):
                await pool.putconn(conn)
            assert (m.used, m.idle) == (0, 2)
            assert server_connections(postgres_url, name) == 2
        finally:
            poolwatch.uninstrument(pool)
            await pool.close()

    asyncio.run(main())
