"""psycopg_pool: the statements beyond ``execute`` (server-side cursors, ``stream()``, ``copy()``)
and the connections the pool opens while ``instrument()`` runs, on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

import poolwatch
from tests.support.pools import Reader, app_name, server_connections
from tests.support.psycopg import conninfo, pools, truth, until

OP = "db_client_operation_duration_seconds_count"
PG = {"db_system_name": "postgresql"}


def count(m: Reader, summary: str, error_type: str = "") -> float:
    operation = summary.split()[0]
    return m(OP, db_operation_name=operation, db_query_summary=summary, error_type=error_type,
             **PG)  # fmt: skip


def seconds(m: Reader, summary: str) -> float:
    return m("db_client_operation_duration_seconds_sum", db_operation_name=summary.split()[0],
             db_query_summary=summary, error_type="", **PG)  # fmt: skip


@pytest.fixture
def make_pool(postgres_url: str) -> Iterator[Any]:
    with pools() as make:

        def factory(cls: type = ConnectionPool, **kwargs: Any) -> Any:
            kwargs.setdefault("kwargs", {"application_name": app_name(), "autocommit": True})
            kwargs.setdefault("open", True)
            return make(cls, conninfo(postgres_url), **kwargs)

        yield factory


@pytest.fixture
def table(postgres_url: str) -> Iterator[str]:
    """A table of this test's own (other sessions share the database)."""
    name = "pw_copy_" + uuid.uuid4().hex[:10]
    with psycopg.connect(conninfo(postgres_url), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (a int, b text)")
        try:
            yield name
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {name}")


def test_server_side_cursors_are_timed(make_pool, registry, build):
    pool = make_pool(min_size=1, max_size=1)
    handle = poolwatch.instrument(pool, registry=registry)
    m = Reader(registry, handle.name)
    with pool.connection() as conn:
        with conn.transaction(), conn.cursor(name="pw_named") as cur:
            cur.execute("SELECT generate_series(1, 5) FROM pg_class LIMIT 5")
            assert len(cur.fetchall()) == 5
        with pytest.raises(psycopg.errors.UndefinedTable), conn.transaction():
            with conn.cursor(name="pw_bad") as cur:
                cur.execute("SELECT 1 FROM pw_no_such_table")
    assert count(m, "SELECT pg_class") == 1
    assert count(m, "SELECT pw_no_such_table", "syntax_error_or_access_rule_violation") == 1
    poolwatch.uninstrument(pool)
    with pool.connection() as conn:
        assert conn.server_cursor_factory is psycopg.ServerCursor


def test_an_application_server_cursor_class_is_kept(make_pool, registry, build):
    class AppServerCursor(psycopg.ServerCursor):  # type: ignore[type-arg]
        pass

    def configure(conn: psycopg.Connection) -> None:  # type: ignore[type-arg]
        conn.server_cursor_factory = AppServerCursor
        conn.row_factory = psycopg.rows.dict_row

    pool = make_pool(min_size=1, max_size=1, configure=configure)
    handle = poolwatch.instrument(pool, registry=registry)
    with pool.connection() as conn, conn.transaction(), conn.cursor(name="pw_app") as cur:
        assert isinstance(cur, AppServerCursor)
        cur.execute("SELECT 7 AS seven")
        assert cur.fetchone() == {"seven": 7}
    assert count(Reader(registry, handle.name), "SELECT") == 1


def test_stream_is_timed_to_the_end_of_the_iteration(make_pool, registry, build):
    pool = make_pool(min_size=1, max_size=1)
    handle = poolwatch.instrument(pool, registry=registry)
    m = Reader(registry, handle.name)
    with pool.connection() as conn:
        cur = conn.cursor()
        rows = cur.stream("SELECT generate_series(1, 3) FROM pg_type LIMIT 3")
        assert count(m, "SELECT pg_type") == 0  # nothing sent before the first row is asked for
        assert next(rows) == (1,)
        threading.Event().wait(0.2)  # the application's time between rows is the stream's
        assert list(rows) == [(2,), (3,)]
        assert count(m, "SELECT pg_type") == 1
        assert seconds(m, "SELECT pg_type") >= 0.2
        for _ in cur.stream("SELECT generate_series(1, 1000) FROM pg_proc"):
            break  # closed early: still one execution, not an error
        with pytest.raises(psycopg.errors.DivisionByZero):
            list(cur.stream("SELECT 1 / 0 FROM pg_namespace"))
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is usable
    assert count(m, "SELECT pg_proc") == 1
    assert count(m, "SELECT pg_namespace", "data_exception") == 1
    assert count(m, "SELECT") == 1


def test_copy_is_timed_to_the_end_of_the_block(make_pool, registry, table, build):
    pool = make_pool(min_size=1, max_size=1)
    handle = poolwatch.instrument(pool, registry=registry)
    m = Reader(registry, handle.name)
    with pool.connection() as conn:
        cur = conn.cursor()
        with cur.copy(f"COPY {table} (a, b) FROM STDIN") as copy:
            copy.write_row((1, "one"))
            threading.Event().wait(0.2)
            copy.write_row((2, "two"))
        assert cur.rowcount == 2
        with cur.copy(f"COPY (SELECT a FROM {table} ORDER BY a) TO STDOUT") as copy:
            assert [bytes(b) for b in copy] == [b"1\n", b"2\n"]
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            with cur.copy(f"COPY {table} (a) FROM STDIN") as copy:
                copy.write(b"not a number\n")
    assert count(m, f"COPY {table}") == 1
    assert seconds(m, f"COPY {table}") >= 0.2
    assert count(m, f"COPY SELECT {table}") == 1
    assert count(m, f"COPY {table}", "data_exception") == 1


def test_stream_copy_and_server_cursors_on_an_async_pool(postgres_url, registry, table, build):
    async def main() -> None:
        pool = AsyncConnectionPool(
            conninfo(postgres_url),
            min_size=1,
            max_size=1,
            kwargs={"application_name": app_name(), "autocommit": True},
            open=False,
        )
        await pool.open(wait=True)
        handle = poolwatch.instrument(pool, registry=registry)
        m = Reader(registry, handle.name)
        try:
            async with pool.connection() as conn:
                cur = conn.cursor()
                assert [r async for r in cur.stream("SELECT 1 FROM pg_type LIMIT 2")] == [
                    (1,),
                    (1,),
                ]
                async with aclosing(
                    cur.stream("SELECT generate_series(1, 1000) FROM pg_proc")
                ) as rows:
                    async for _ in rows:
                        break  # closed early
                async with cur.copy(f"COPY {table} (a, b) FROM STDIN") as copy:
                    await copy.write_row((1, "one"))
                async with conn.transaction(), conn.cursor(name="pw_async_named") as named:
                    await named.execute("SELECT a FROM " + table)
                    assert await named.fetchall() == [(1,)]
                with pytest.raises(psycopg.errors.DivisionByZero):
                    async for _ in cur.stream("SELECT 1 / 0 FROM pg_namespace"):
                        pass
            assert count(m, "SELECT pg_type") == 1
            assert count(m, "SELECT pg_proc") == 1
            assert count(m, f"COPY {table}") == 1
            assert count(m, f"SELECT {table}") == 1
            assert count(m, "SELECT pg_namespace", "data_exception") == 1
        finally:
            await pool.close()

    asyncio.run(main())


def test_stream_and_copy_spans_when_tracing_is_on(make_pool, registry, table):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    pool = make_pool(min_size=1, max_size=1)
    handle = poolwatch.instrument(pool, registry=registry, tracer_provider=provider)
    with pool.connection() as conn:
        cur = conn.cursor()
        assert list(cur.stream("SELECT 'secret' FROM pg_type LIMIT 1")) == [("secret",)]
        with cur.copy(f"COPY {table} (a, b) FROM STDIN") as copy:
            copy.write_row((1, "one"))
        with conn.transaction(), conn.cursor(name="pw_traced") as named:
            named.execute("SELECT 'x' FROM pg_class LIMIT 1")
    spans = [
        s
        for s in exporter.get_finished_spans()
        if s.attributes.get("db.query.summary") not in (None, "other")
    ]
    assert [(s.name, s.attributes.get("db.query.text")) for s in spans] == [
        ("SELECT pg_type", "SELECT ? FROM pg_type LIMIT ?"),
        (f"COPY {table}", f"COPY {table} (a, b) FROM STDIN"),
        ("SELECT pg_class", "SELECT ? FROM pg_class LIMIT ?"),
    ]
    assert all(s.attributes["db.client.connection.pool.name"] == handle.name for s in spans)
    poolwatch.uninstrument(pool)
    with pool.connection() as conn:
        assert conn.cursor_factory is psycopg.Cursor
        assert conn.server_cursor_factory is psycopg.ServerCursor


# -- connections opened while instrument() runs ------------------------------------------------


def test_a_connection_opening_while_instrument_runs_is_timed(make_pool, registry, postgres_url,
                                                             build):  # fmt: skip
    """The pool's worker is inside ``_connect`` (in the application's ``configure``) when
    ``instrument()`` replaces it: the connection it brings is prepared at its first checkout."""
    opening, release = threading.Event(), threading.Event()

    def configure(conn: psycopg.Connection) -> None:  # type: ignore[type-arg]
        opening.set()
        release.wait(10)

    pool = make_pool(min_size=1, max_size=1, configure=configure)
    assert opening.wait(10)
    handle = poolwatch.instrument(pool, registry=registry)
    checks = pool.__dict__["getconn"]._poolwatch.unsure
    assert checks.value  # a connection is opening: each checkout is checked
    release.set()
    m = Reader(registry, handle.name)
    with pool.connection() as conn:
        conn.execute("SELECT 1")
        assert (m.used, m.idle) == (1, 0)
        assert not checks.value  # the one connection there is: seen
    assert count(m, "SELECT") == 1
    assert (m.used, m.idle) == (0, 1)
    t = truth(pool, postgres_url, pool.kwargs["application_name"])
    assert t == {"pool_size": 1, "pool_available": 1, "server": 1}


def test_connections_opened_concurrently_with_instrument_are_all_timed(make_pool, registry,
                                                                       postgres_url, build):  # fmt: skip
    """Connections opening in the pool's workers while ``instrument()`` runs, and checked out
    before it did: every checkout that starts after it returned is timed."""
    name = app_name()
    pool = make_pool(min_size=6, max_size=6, kwargs={"application_name": name}, num_workers=3)
    early = pool.getconn()  # checked out before instrument(), returned after it
    handle = poolwatch.instrument(pool, registry=registry)
    pool.putconn(early)
    m = Reader(registry, handle.name)
    until(lambda: server_connections(postgres_url, name) == 6)
    held = [pool.getconn() for _ in range(6)]
    for conn in held:
        conn.execute("SELECT 1")
    assert count(m, "SELECT") == 6
    assert (m.used, m.idle) == (6, 0)
    for conn in held:
        pool.putconn(conn)
    assert (m.used, m.idle) == (0, 6)
    assert truth(pool, postgres_url, name) == {"pool_size": 6, "pool_available": 6, "server": 6}
    assert not pool.__dict__["getconn"]._poolwatch.unsure.value


def test_an_async_connection_opening_while_instrument_runs_is_timed(postgres_url, registry,
                                                                     build):  # fmt: skip
    name = app_name()

    async def main() -> None:
        opening, release = asyncio.Event(), asyncio.Event()

        async def configure(conn: psycopg.AsyncConnection) -> None:  # type: ignore[type-arg]
            opening.set()
            await release.wait()

        pool = AsyncConnectionPool(
            conninfo(postgres_url),
            min_size=1,
            max_size=1,
            configure=configure,
            kwargs={"application_name": name},
            open=False,
        )
        await pool.open()
        await asyncio.wait_for(opening.wait(), 10)
        handle = poolwatch.instrument(pool, registry=registry)
        release.set()
        m = Reader(registry, handle.name)
        try:
            checks = pool.__dict__["getconn"]._poolwatch.unsure
            assert checks.value
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
            assert not checks.value  # settled on the event loop, at that checkout
            assert count(m, "SELECT") == 1
            assert (m.used, m.idle) == (0, 1)
            assert server_connections(postgres_url, name) == 1
        finally:
            await pool.close()

    asyncio.run(main())
