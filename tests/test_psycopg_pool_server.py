"""psycopg_pool and the server: ``application_name`` on the pool's connections and the
server-limit probe on async pools, checked against PostgreSQL's own pg_stat_activity."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, AsyncNullConnectionPool, ConnectionPool

import poolwatch
from tests.support.pools import Reader, app_name, server_connections
from tests.support.psycopg import conninfo, pools

ALLOWED = ("SELECT current_setting('max_connections')::int"
           " - current_setting('superuser_reserved_connections')::int"
           " - coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0)")  # fmt: skip


@pytest.fixture
def make_pool(postgres_url: str) -> Iterator[Any]:
    """Pools with no application_name of their own unless the test gives one."""
    with pools() as make:

        def factory(cls: type = ConnectionPool, info: str | None = None, **kwargs: Any) -> Any:
            kwargs.setdefault("open", True)
            return make(cls, info or conninfo(postgres_url), **kwargs)

        yield factory


def name_of(observer: psycopg.Connection, conn: Any) -> str:  # type: ignore[type-arg]
    """What pg_stat_activity says the connection's application_name is."""
    row = observer.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s",
                           [conn.info.backend_pid]).fetchone()  # fmt: skip
    assert row is not None
    return str(row[0])


@pytest.fixture
def observer(postgres_url: str) -> Iterator[psycopg.Connection]:  # type: ignore[type-arg]
    with psycopg.connect(conninfo(postgres_url), autocommit=True) as conn:
        yield conn


def test_application_name_names_the_pools_new_connections(make_pool, registry, postgres_url,
                                                          observer, monkeypatch):  # fmt: skip
    monkeypatch.delenv("PGAPPNAME", raising=False)
    pool = make_pool(min_size=1, max_size=3, kwargs={"connect_timeout": 10})
    pool.wait()
    with pool.connection() as conn:
        before = conn  # opened before instrument(): it keeps its name
        assert name_of(observer, conn) == ""
    kwargs = pool.kwargs
    handle = poolwatch.instrument(pool, registry=registry, name=app_name(), application_name=True)
    assert kwargs == {"connect_timeout": 10}  # the application's dict is not changed
    a, b = pool.getconn(), pool.getconn()
    assert {a, b} >= {before}
    (new,) = {a, b} - {before}
    assert name_of(observer, new) == handle.name
    assert name_of(observer, before) == ""
    assert server_connections(postgres_url, handle.name) == 1
    pool.putconn(a)
    pool.putconn(b)
    poolwatch.uninstrument(pool)
    assert pool.kwargs is kwargs  # given back as it was

    named = make_pool(min_size=0, max_size=1, open=False)
    wanted = app_name()
    poolwatch.instrument(named, registry=registry, application_name=wanted)
    named.open()
    with named.connection() as conn:
        assert name_of(observer, conn) == wanted
    assert server_connections(postgres_url, wanted) == 1


def test_an_application_name_the_application_set_wins(make_pool, registry, observer,
                                                      postgres_url, monkeypatch):  # fmt: skip
    monkeypatch.delenv("PGAPPNAME", raising=False)
    in_conninfo, in_kwargs, from_env = app_name(), app_name(), app_name()
    by_conninfo = make_pool(
        info=f"{conninfo(postgres_url)} application_name={in_conninfo}", min_size=0, max_size=1
    )
    by_kwargs = make_pool(min_size=0, max_size=1, kwargs={"application_name": in_kwargs})
    for pool in (by_conninfo, by_kwargs):
        poolwatch.instrument(pool, registry=registry, name=app_name(), application_name=True)
    with by_conninfo.connection() as conn:
        assert name_of(observer, conn) == in_conninfo
    with by_kwargs.connection() as conn:
        assert name_of(observer, conn) == in_kwargs
    assert by_kwargs.kwargs == {"application_name": in_kwargs}

    monkeypatch.setenv("PGAPPNAME", from_env)
    by_env = make_pool(min_size=0, max_size=1)
    poolwatch.instrument(by_env, registry=registry, name=app_name(), application_name=True)
    with by_env.connection() as conn:
        assert name_of(observer, conn) == from_env
    monkeypatch.delenv("PGAPPNAME")

    off = make_pool(min_size=0, max_size=1)  # the default: off
    handle = poolwatch.instrument(off, registry=registry, name=app_name())
    with off.connection() as conn:
        assert name_of(observer, conn) == ""
    assert server_connections(postgres_url, handle.name) == 0


def test_a_callable_conninfo_is_not_called_to_look_for_a_name(make_pool, registry, observer,
                                                              postgres_url, caplog,
                                                              monkeypatch):  # fmt: skip
    monkeypatch.delenv("PGAPPNAME", raising=False)
    calls: list[int] = []

    def dynamic() -> str:
        calls.append(1)
        return conninfo(postgres_url)

    pool = make_pool(info=dynamic, min_size=0, max_size=1)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        handle = poolwatch.instrument(
            pool, registry=registry, name=app_name(), application_name=True
        )
    assert calls == []
    assert "callable" in caplog.text and "application_name" in caplog.text
    assert "password" not in caplog.text
    with pool.connection() as conn:
        assert name_of(observer, conn) == ""
    assert server_connections(postgres_url, handle.name) == 0


def test_application_name_on_an_async_pool(postgres_url, registry, monkeypatch):
    monkeypatch.delenv("PGAPPNAME", raising=False)
    wanted = app_name()

    async def main() -> None:
        pool = AsyncConnectionPool(conninfo(postgres_url), min_size=1, max_size=1, open=False)
        poolwatch.instrument(pool, registry=registry, name=wanted, application_name=True)
        await pool.open(wait=True)
        try:
            async with pool.connection() as conn:
                cur = await conn.execute("SHOW application_name")
                assert await cur.fetchone() == (wanted,)
            assert server_connections(postgres_url, wanted) == 1
        finally:
            await pool.close()

    asyncio.run(main())


@pytest.mark.parametrize("cls", [AsyncConnectionPool, AsyncNullConnectionPool])
def test_server_limits_are_read_on_an_async_pools_new_connection(cls, postgres_url, registry):
    name = app_name()

    async def main() -> None:
        pool = cls(
            conninfo(postgres_url),
            min_size=0,
            max_size=1,
            kwargs={"application_name": name},
            open=False,
        )
        await pool.open()
        handle = poolwatch.instrument(pool, registry=registry)
        m = Reader(registry, handle.name)
        try:
            assert m.get("poolwatch_server_connections_max") is None
            async with pool.connection() as conn:
                # The pool opened it and the probe read on it before handing it over: no
                # second connection, and the application's transaction state is untouched.
                assert server_connections(postgres_url, name) == 1
                assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                cur = await conn.execute(ALLOWED)
                allowed = (await cur.fetchone())[0]
            assert m("poolwatch_server_connections_max") == allowed
            assert (
                m(
                    "poolwatch_server_connections_limit_info",
                    setting="max_connections",
                    value=str(await _setting(conn_info=postgres_url)),
                )
                == 1
            )
            assert pool.get_stats().get("connections_num") == 1
            # The probe's own query is not the application's statement.
            assert statements(registry, handle.name) == {"SELECT": 1.0}
        finally:
            await pool.close()

    asyncio.run(main())


def statements(registry: Any, pool: str) -> dict[str, float]:
    return {
        s.labels["db_query_summary"]: s.value
        for f in registry.collect()
        if f.name == "db_client_operation_duration_seconds"
        for s in f.samples
        if s.name.endswith("_count") and s.labels["db_client_connection_pool_name"] == pool
    }


async def _setting(conn_info: str) -> int:
    async with await psycopg.AsyncConnection.connect(conninfo(conn_info)) as conn:
        cur = await conn.execute("SELECT current_setting('max_connections')::int")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])
