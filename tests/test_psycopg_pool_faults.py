"""psycopg_pool under faults, on the real PostgreSQL: whatever the pool does to its connections,
used + idle stays the pool's connections (get_stats()) and the server's (pg_stat_activity)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

import poolwatch
from tests.support.pools import Reader, app_name, server_connections
from tests.support.psycopg import conninfo, pools, truth, until

pytestmark = pytest.mark.slow


@pytest.fixture
def make_pool(postgres_url: str) -> Iterator[Any]:
    with pools() as make:

        def factory(url: str | None = None, **kwargs: Any) -> Any:
            kwargs.setdefault("kwargs", {"application_name": app_name()})
            kwargs.setdefault("open", True)
            return make(ConnectionPool, conninfo(url or postgres_url), **kwargs)

        yield factory


def settled(pool: Any, m: Reader, url: str, used: int, idle: int) -> bool:
    t = truth(pool, url, pool.kwargs["application_name"])
    return (m.used, m.idle) == (used, idle) and t == {
        "pool_size": used + idle, "pool_available": idle, "server": used + idle}


def terminate(url: str, application_name: str) -> int:
    with psycopg.connect(conninfo(url), autocommit=True) as c:
        rows = c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE application_name = %s", [application_name]).fetchall()
    return len(rows)


def test_backends_terminated_while_idle(make_pool, registry, postgres_url):
    pool = make_pool(min_size=2, max_size=2)
    pool.wait()
    m = Reader(registry, poolwatch.instrument(pool, registry=registry).name)
    assert terminate(postgres_url, pool.kwargs["application_name"]) == 2
    pool.check()  # finds both broken and opens two new ones
    until(lambda: settled(pool, m, postgres_url, 0, 2))
    assert m("poolwatch_connection_invalidations_total", kind="hard",
             reason="connection_lost") == 2
    assert m("db_client_connection_create_time_seconds_count") == 2


def test_backend_terminated_while_held(make_pool, registry, postgres_url):
    pool = make_pool(min_size=2, max_size=2)
    pool.wait()
    m = Reader(registry, poolwatch.instrument(pool, registry=registry).name)
    conn = pool.getconn()
    assert terminate(postgres_url, pool.kwargs["application_name"]) == 2
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    pool.putconn(conn)  # a bad return: the pool replaces it
    assert m.used == 0
    pool.check()  # and the idle one killed meanwhile
    until(lambda: settled(pool, m, postgres_url, 0, 2))
    assert m("poolwatch_connection_invalidations_total", kind="hard", reason="bad_return") == 1
    assert m("poolwatch_connection_invalidations_total", kind="hard",
             reason="connection_lost") == 1
    # 57P01 admin_shutdown, the SQLSTATE the terminated backend sent.
    assert m("db_client_operation_duration_seconds_count", db_system_name="postgresql",
             db_operation_name="SELECT", db_query_summary="SELECT",
             error_type="operator_intervention") == 1


def test_max_lifetime_and_max_idle_expiry(make_pool, registry, postgres_url):
    pool = make_pool(min_size=1, max_size=3, max_lifetime=0.5, max_idle=0.5)
    pool.wait()
    m = Reader(registry, poolwatch.instrument(pool, registry=registry).name)
    held = [pool.getconn() for _ in range(3)]
    assert settled(pool, m, postgres_url, 3, 0)
    first = held[0]
    time.sleep(0.6)  # past max_lifetime: returned, they are closed and replaced
    for conn in held:
        pool.putconn(conn)
    assert first.closed
    # ShrinkPool then closes one unused connection per max_idle, down to min_size.
    until(lambda: settled(pool, m, postgres_url, 0, 1))


def test_resize_and_drain(make_pool, registry, postgres_url):
    pool = make_pool(min_size=1, max_size=1)
    pool.wait()
    m = Reader(registry, poolwatch.instrument(pool, registry=registry).name)
    pool.resize(3, 4)
    until(lambda: settled(pool, m, postgres_url, 0, 3))
    assert (m("db_client_connection_idle_min"), m("db_client_connection_max")) == (3, 4)
    before = list(pool._pool)
    pool.drain()  # closes every idle connection and opens new ones
    until(lambda: settled(pool, m, postgres_url, 0, 3) and not set(pool._pool) & set(before))
    assert all(c.closed for c in before)
    assert m("db_client_connection_create_time_seconds_count") == 5


def test_server_restart(throwaway_pg, registry):
    name = app_name()
    pool = ConnectionPool(conninfo(throwaway_pg.url), min_size=2, max_size=2, open=True,
                          kwargs={"application_name": name}, check=ConnectionPool.check_connection,
                          reconnect_timeout=30)
    try:
        pool.wait()
        m = Reader(registry, poolwatch.instrument(pool, registry=registry).name)
        throwaway_pg.restart()
        with pool.connection() as conn:  # the check finds the broken ones and reconnects
            conn.execute("SELECT 1")
        until(lambda: settled(pool, m, throwaway_pg.url, 0, 2), timeout=30)
        assert server_connections(throwaway_pg.url, name) == 2
        assert m("poolwatch_connection_invalidations_total", kind="hard",
                 reason="connection_lost") >= 1
    finally:
        poolwatch.uninstrument(pool)
        pool.close()
