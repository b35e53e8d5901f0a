"""psycopg_pool pools: the contract's metrics against the real PostgreSQL, with exact values, and
compared with the pool's own get_stats() and with pg_stat_activity."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import psycopg
import pytest
from psycopg_pool import ConnectionPool, NullConnectionPool, PoolTimeout, TooManyRequests

import poolwatch
from poolwatch.sources.psycopg_pool import _compat
from tests.support.pools import Reader, app_name
from tests.support.psycopg import conninfo, pools, truth, until


@pytest.fixture
def make_pool(postgres_url: str) -> Iterator[Any]:
    """``make_pool(cls=ConnectionPool, **kwargs)`` on the test database with its own
    application_name (``pool.kwargs["application_name"]``)."""
    with pools() as make:

        def factory(cls: type = ConnectionPool, **kwargs: Any) -> Any:
            kwargs.setdefault("kwargs", {})
            kwargs["kwargs"].setdefault("application_name", app_name())
            kwargs.setdefault("open", True)
            return make(cls, conninfo(postgres_url), **kwargs)

        yield factory


def observed(m: Reader) -> tuple[float | None, float | None]:
    return m.used, m.idle


def agrees(pool: Any, m: Reader, postgres_url: str) -> bool:
    """used + idle = the pool's connections = the server's; idle = the pool's available."""
    t = truth(pool, postgres_url, pool.kwargs["application_name"])
    used, idle = m.used or 0, m.idle or 0
    return used + idle == t["pool_size"] == t["server"] and idle == t["pool_available"]


def test_used_and_idle_match_the_pool_and_the_server(make_pool, registry, postgres_url, build):
    pool = make_pool(min_size=2, max_size=4, timeout=10)
    pool.wait()
    handle = poolwatch.instrument(pool, registry=registry)
    m = Reader(registry, handle.name)
    assert observed(m) == (0, 2)
    assert agrees(pool, m, postgres_url)
    assert m("db_client_connection_max") == 4
    assert m("db_client_connection_idle_max") == 4
    assert m("db_client_connection_idle_min") == 2

    held = [pool.getconn() for _ in range(3)]  # the third makes the pool grow by one
    assert observed(m) == (3, 0)
    assert agrees(pool, m, postgres_url)
    for conn in held:
        pool.putconn(conn)
    until(lambda: observed(m) == (0, 3))
    assert agrees(pool, m, postgres_url)
    assert m("db_client_connection_wait_time_seconds_count") == 3
    assert m("db_client_connection_use_time_seconds_count") == 3
    assert m("db_client_connection_create_time_seconds_count") == 1  # opened after instrument()
    assert m.pending == 0


def test_connection_context_manager_and_statements(make_pool, registry, build):
    pool = make_pool(min_size=1, max_size=2)
    handle = poolwatch.instrument(pool, registry=registry)
    pool.wait()
    m = Reader(registry, handle.name)
    with pool.connection() as conn:
        conn.execute("SELECT 1")
        with conn.cursor() as cur:
            cur.execute("SELECT relname FROM pg_class WHERE relname = %s", ["x"])
            cur.executemany("SELECT %s", [(1,), (2,)])
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
    op = "db_client_operation_duration_seconds_count"
    base = {"db_system_name": "postgresql", "error_type": ""}
    assert m(op, db_operation_name="SELECT", db_query_summary="SELECT", **base) == 2
    assert m(op, db_operation_name="SELECT", db_query_summary="SELECT pg_class", **base) == 1
    assert m(op, db_operation_name="SELECT", db_query_summary="SELECT",
             db_system_name="postgresql", error_type="data_exception") == 1
    assert m("db_client_connection_use_time_seconds_count") == 1
    assert observed(m) == (0, 1)


def test_application_cursor_and_row_factories_are_kept(make_pool, registry, build):
    class AppCursor(psycopg.ClientCursor):  # type: ignore[type-arg]
        seen: ClassVar[list[str]] = []

        def execute(self, query, params=None, **kw):  # type: ignore[no-untyped-def, override]
            self.seen.append(str(query))
            return super().execute(query, params, **kw)

    def configure(conn: psycopg.Connection) -> None:  # type: ignore[type-arg]
        conn.cursor_factory = AppCursor
        conn.row_factory = psycopg.rows.dict_row

    pool = make_pool(min_size=1, max_size=1, configure=configure)
    pool.wait()
    handle = poolwatch.instrument(pool, registry=registry)
    m = Reader(registry, handle.name)
    pool.check()  # the idle connection was made before instrument(): adopted, not replaced
    with pool.connection() as conn:
        cur = conn.execute("SELECT 1 AS one")
        assert isinstance(cur, AppCursor)
        assert cur.fetchone() == {"one": 1}
        assert conn.row_factory is psycopg.rows.dict_row
    # The application's class ran the pool's own check (an empty query) and the statement.
    assert AppCursor.seen == ["", "SELECT 1 AS one"]
    assert m("db_client_operation_duration_seconds_count", db_system_name="postgresql",
             db_operation_name="SELECT", db_query_summary="SELECT", error_type="") == 1
    poolwatch.uninstrument(pool)
    with pool.connection() as conn:
        assert conn.cursor_factory is AppCursor


def unsure(pool: Any) -> bool:
    """Whether the pool's checkout wrapper checks each connection for one no seam saw opening."""
    return bool(pool.__dict__["getconn"]._poolwatch.unsure.value)


def test_checkouts_are_checked_for_unseen_connections_only_while_there_can_be_one(
    make_pool, registry, postgres_url, build
):  # fmt: skip
    # Not open yet, or open with every connection idle: each connection it will ever hand out
    # comes through the connect seam, or was prepared by instrument().
    later = make_pool(min_size=1, max_size=1, open=False)
    m_later = Reader(registry, poolwatch.instrument(later, registry=registry).name)
    assert not unsure(later)
    later.open(wait=True)
    with later.connection() as conn:
        conn.execute("SELECT 1")  # on a connection the connect seam prepared
    assert m_later("db_client_operation_duration_seconds_count", db_system_name="postgresql",
                   db_operation_name="SELECT", db_query_summary="SELECT", error_type="") == 1
    assert agrees(later, m_later, postgres_url)
    idle = make_pool(min_size=2, max_size=2)
    idle.wait()
    poolwatch.instrument(idle, registry=registry)
    assert not unsure(idle)

    # A connection out at instrument(): checked until the pool has nothing poolwatch did not
    # record and prepare, which a collection finds once it is back.
    pool = make_pool(min_size=2, max_size=2)
    pool.wait()
    early = pool.getconn()
    handle = poolwatch.instrument(pool, registry=registry)
    m = Reader(registry, handle.name)
    assert unsure(pool)
    assert (m.used, m.idle) == (0, 1)  # the early one is not counted until it is back
    assert unsure(pool)
    pool.putconn(early)
    assert (m.used, m.idle) == (0, 2) and not unsure(pool)
    held = [pool.getconn() for _ in range(2)]
    for conn in held:
        conn.execute("SELECT 1")
    assert m("db_client_operation_duration_seconds_count", db_system_name="postgresql",
             db_operation_name="SELECT", db_query_summary="SELECT", error_type="") == 2
    assert (m.used, m.idle) == (2, 0)
    for conn in held:
        pool.putconn(conn)
    assert agrees(pool, m, postgres_url)


def test_a_connection_out_for_good_keeps_the_check_and_the_gauges_exact(
    make_pool, registry, postgres_url, build
):  # fmt: skip
    pool = make_pool(min_size=3, max_size=3)
    pool.wait()
    forever = pool.getconn()  # a LISTEN loop's connection, say: never returned
    handle = poolwatch.instrument(pool, registry=registry)
    m = Reader(registry, handle.name)
    for _ in range(3):
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        assert (m.used, m.idle) == (0, 2) and unsure(pool)
    t = truth(pool, postgres_url, pool.kwargs["application_name"])
    # The one out before instrument() is the pool's, not counted as used: it was never seen
    # checked out.
    assert t == {"pool_size": 3, "pool_available": 2, "server": 3}
    pool.putconn(forever)
    assert (m.used, m.idle) == (0, 3) and not unsure(pool)


def test_timeouts_and_too_many_requests_are_told_apart(make_pool, registry, build):
    pool = make_pool(min_size=1, max_size=1, timeout=5, max_waiting=1)
    pool.wait()
    handle = poolwatch.instrument(pool, registry=registry)
    m = Reader(registry, handle.name)
    held = pool.getconn()
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(pool.getconn()))
    waiter.start()
    until(lambda: pool.get_stats()["requests_waiting"] == 1)
    assert m.pending == 1
    with pytest.raises(TooManyRequests):
        pool.getconn()
    assert m("poolwatch_connection_errors_total", error_type="too_many_requests") == 1
    assert m("db_client_connection_timeouts_total") == 0
    pool.putconn(held)
    waiter.join(5)
    assert observed(m) == (1, 0) and m.pending == 0
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.05)
    assert m("db_client_connection_timeouts_total") == 1
    assert m("poolwatch_connection_errors_total", error_type="too_many_requests") == 1
    pool.putconn(got[0])
    assert observed(m) == (0, 1) and m.pending == 0
    # Waits of the checkouts and of the timeout; a refusal is an error, not a wait (as for
    # SQLAlchemy's connection errors).
    assert m("db_client_connection_wait_time_seconds_count") == 3


def test_connection_errors_by_type(registry, postgres_url, build):
    # A port nobody listens on: the pool's worker fails to connect, again and again.
    from tests.support.services import free_port

    pool = NullConnectionPool(f"host=127.0.0.1 port={free_port()} dbname=test user=postgres "
                              "connect_timeout=2", max_size=1, timeout=3, open=True)
    try:
        handle = poolwatch.instrument(pool, registry=registry)
        m = Reader(registry, handle.name)
        with pytest.raises(psycopg.OperationalError):
            pool.getconn()
        assert m("poolwatch_connection_errors_total", error_type="connection_refused") == 1
        assert m("db_client_connection_timeouts_total") == 0
        assert observed(m) == (0, 0) and m.pending == 0
    finally:
        poolwatch.uninstrument(pool)
        pool.close()


def test_null_pool(make_pool, registry, postgres_url, build):
    pool = make_pool(NullConnectionPool, max_size=2)
    handle = poolwatch.instrument(pool, registry=registry)
    m = Reader(registry, handle.name)
    assert m("db_client_connection_max") == 2
    assert m("db_client_connection_idle_max") == 0
    assert m("db_client_connection_idle_min") == 0
    conn = pool.getconn()
    assert observed(m) == (1, 0)
    assert agrees(pool, m, postgres_url)
    conn.execute("SELECT 1")
    pool.putconn(conn)
    assert observed(m) == (0, 0)
    assert agrees(pool, m, postgres_url)
    assert m("db_client_connection_create_time_seconds_count") == 1
    assert m("db_client_operation_duration_seconds_count", db_system_name="postgresql",
             db_operation_name="SELECT", db_query_summary="SELECT", error_type="") == 1


def test_names_info_and_handle(make_pool, registry, postgres_url):
    pool = make_pool(min_size=1, max_size=3, timeout=2.5, max_waiting=7, max_lifetime=600,
                     max_idle=60)
    handle = poolwatch.instrument(pool, registry=registry)
    assert handle.name == "127.0.0.1:5432/test"  # host:port/dbname; never the user
    assert poolwatch.instrument(pool, registry=registry) is handle
    assert poolwatch.instrumented(pool) is handle
    info = {k: v for k, v in _info(registry, handle.name).items() if v}
    assert info == {"db_client_connection_pool_name": handle.name,
                    "pool_class": "ConnectionPool", "timeout": "2.5", "min_size": "1",
                    "max_size": "3", "max_waiting": "7", "max_lifetime": "600", "max_idle": "60",
                    "server_address": "127.0.0.1", "server_port": "5432", "db_namespace": "test"}

    named = make_pool(name="orders", min_size=0, max_size=1)
    assert poolwatch.instrument(named, registry=registry).name == "orders"
    overridden = make_pool(name="ignored", min_size=0, max_size=1)
    assert poolwatch.instrument(overridden, registry=registry, name="billing").name == "billing"
    with pytest.raises(ValueError, match="name="):
        poolwatch.instrument(make_pool(min_size=0, max_size=1), registry=registry, name="orders")


def test_server_limits_are_read_on_a_new_connection(make_pool, registry):
    pool = make_pool(min_size=0, max_size=1)
    handle = poolwatch.instrument(pool, registry=registry)
    with pool.connection() as conn:  # the pool opens it: the probe reads on it, then it is ours
        cur = psycopg.ClientCursor(conn)
        allowed = cur.execute("SELECT current_setting('max_connections')::int"
                              " - current_setting('superuser_reserved_connections')::int"
                              " - coalesce(nullif(current_setting('reserved_connections', true),"
                              " '')::int, 0)").fetchone()[0]
    assert Reader(registry, handle.name)("poolwatch_server_connections_max") == allowed


def _info(registry: Any, name: str) -> dict[str, str]:
    for family in registry.collect():
        if family.name == "poolwatch_pool_info":
            for sample in family.samples:
                if sample.labels["db_client_connection_pool_name"] == name:
                    return dict(sample.labels)
    raise AssertionError("no info series")


def test_uninstrument_removes_exactly_what_was_added(make_pool, registry, build):
    pool = make_pool(min_size=1, max_size=2)
    pool.wait()
    before = dict(pool.__dict__)
    with pool.connection() as conn:
        factory = conn.cursor_factory
    handle = poolwatch.instrument(pool, registry=registry)
    assert set(pool.__dict__) - set(before) == {"getconn", "putconn", "close", "_connect"}
    with pool.connection():
        pass
    assert poolwatch.uninstrument(pool) is True
    assert pool.__dict__.keys() == before.keys()
    with pool.connection() as conn:
        assert conn.cursor_factory is factory
    assert Reader(registry, handle.name).used is None
    assert poolwatch.uninstrument(pool) is False


def test_closed_or_dropped_pool_leaves_the_registry(postgres_url, registry):
    info = conninfo(postgres_url)
    pool = ConnectionPool(info, min_size=1, max_size=2, open=True)
    handle = poolwatch.instrument(pool, registry=registry, name="closing")
    m = Reader(registry, "closing")
    out = pool.getconn()
    assert observed(m) == (1, 0) or observed(m) == (1, 1)
    pool.close()  # with a connection out
    assert not handle.active and m.used is None
    pool.putconn(out)  # after close: the pool closes it; nothing of poolwatch runs
    assert out.closed

    dropped = ConnectionPool(info, min_size=0, max_size=1, open=True)
    poolwatch.instrument(dropped, registry=registry, name="dropped")
    assert Reader(registry, "dropped").used == 0
    dropped.close = dropped.close.__wrapped__  # drop without poolwatch's close() running
    dropped.close()
    del dropped
    gc.collect()
    assert Reader(registry, "dropped").used is None


def test_unsupported_version_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"psycopg_pool >=3.2,<3.4"):
        _compat.check_version("3.1.9")
    with pytest.raises(RuntimeError, match=r"psycopg_pool 4.0.0 is not supported"):
        _compat.check_version("4.0.0")
    _compat.check_version("3.3.3")


def test_leak_with_the_callers_stack(make_pool, registry, caplog):
    pool = make_pool(min_size=1, max_size=1)
    handle = poolwatch.instrument(pool, registry=registry, leak_threshold=0.2)
    m = Reader(registry, handle.name)

    def checkout_that_leaks() -> Any:
        return pool.getconn()

    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        conn = checkout_that_leaks()
        until(lambda: m("poolwatch_connection_leaks_total") == 1)
        until(lambda: any(r.levelno == logging.WARNING for r in caplog.records))
        pool.putconn(conn)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "in checkout_that_leaks" in warning and "test_psycopg_pool.py" in warning
    assert "/psycopg_pool/" not in warning


def test_an_engine_on_an_uninstrumented_psycopg_pool_is_said_once(
    make_pool, registry, make_engine, caplog
):
    from sqlalchemy.pool import NullPool

    pool = make_pool(min_size=0, max_size=3, close_returns=True)
    engine = make_engine("postgresql+psycopg://", creator=pool.getconn, poolclass=NullPool)
    poolwatch.instrument(engine, registry=registry, name="behind-creator")
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        for _ in range(2):
            with engine.connect():
                pass
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "come from the psycopg_pool" in warning and "not instrumented" in warning

    caplog.clear()
    early = make_engine("postgresql+psycopg://", creator=pool.getconn, poolclass=NullPool)
    handle = poolwatch.instrument(pool, registry=registry)
    # Instrumented first, so pool.getconn is poolwatch's wrapper.
    other = make_engine("postgresql+psycopg://", creator=pool.getconn, poolclass=NullPool)
    poolwatch.instrument(other, registry=registry, name="behind-instrumented")
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        with other.connect():
            assert Reader(registry, handle.name).used == 1  # the true pool sees it
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    poolwatch.instrument(early, registry=registry, name="bound-too-early")
    with caplog.at_level(logging.WARNING, logger="poolwatch"), early.connect():
        pass  # its creator is the method bound before the psycopg_pool was instrumented
    assert "before that psycopg_pool was instrumented" in caplog.text


def test_statement_and_wait_spans_when_tracing_is_on(make_pool, registry):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from poolwatch.backends.otel.tracing import WAIT_SPAN_NAME

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    pool = make_pool(min_size=1, max_size=1)
    pool.wait()
    handle = poolwatch.instrument(pool, registry=registry, tracer_provider=provider,
                                  wait_span_threshold=0)
    pool.check()
    with pool.connection() as conn:
        assert isinstance(conn.cursor(), psycopg.Cursor)
        conn.execute("SELECT 'secret-literal' AS x")
    spans = exporter.get_finished_spans()
    (wait,) = [s for s in spans if s.name == WAIT_SPAN_NAME]
    assert wait.attributes["db.client.connection.pool.name"] == handle.name
    statements = [s for s in spans if s.name != WAIT_SPAN_NAME]
    # The pool's own check (an empty query), then the application's statement.
    assert [(s.name, s.attributes.get("db.query.text")) for s in statements] == [
        ("other", ""), ("SELECT", "SELECT ? AS x")]
    assert statements[1].attributes["db.client.connection.pool.name"] == handle.name
    assert statements[1].attributes["db.system.name"] == "postgresql"
    m = Reader(registry, handle.name)
    assert m("db_client_operation_duration_seconds_count", db_system_name="postgresql",
             db_operation_name="SELECT", db_query_summary="SELECT", error_type="") == 1
    assert m.get("db_client_operation_duration_seconds_count", db_system_name="postgresql",
                 db_operation_name="", db_query_summary="other", error_type="") is None
    poolwatch.uninstrument(pool)
    with pool.connection() as conn:
        assert conn.cursor_factory is psycopg.Cursor


def test_without_the_private_connect_seam(make_pool, registry, postgres_url, monkeypatch, caplog):
    """A psycopg_pool without ``_connect``: a warning once, and the gauges still right (new
    connections are counted from their first checkout)."""
    monkeypatch.setattr(_compat, "CONNECT_SEAM", "_no_such_method")
    monkeypatch.setattr(_compat, "_warned", set())
    pool = make_pool(min_size=1, max_size=2, timeout=10)
    pool.wait()
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        handle = poolwatch.instrument(pool, registry=registry)
        poolwatch.instrument(make_pool(min_size=0, max_size=1), registry=registry)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "has no _no_such_method()" in warning
    m = Reader(registry, handle.name)
    assert observed(m) == (0, 1)
    a, b = pool.getconn(), pool.getconn()  # b is a connection poolwatch never saw opening
    assert observed(m) == (2, 0)
    pool.putconn(a)
    pool.putconn(b)
    assert observed(m) == (0, 2)
    assert agrees(pool, m, postgres_url)
    assert m("db_client_connection_create_time_seconds_count") == 0  # not seen without the seam


def test_folded_statements_are_counted_as_for_sqlalchemy(make_pool, registry, build):
    # The cap, "other" and the folded counter are the core's (core/statement_series.py): every
    # execution past the cap is counted, failed ones too, as for an Engine.
    pool = make_pool(min_size=1, max_size=1)  # its connection may be opening as instrument() runs
    handle = poolwatch.instrument(pool, registry=registry, max_query_summaries=2)
    m = Reader(registry, handle.name)
    with pool.connection() as conn:
        conn.execute("SELECT 1 FROM pg_class LIMIT 1")
        conn.execute("SELECT 1 FROM pg_type LIMIT 1")  # the cap is full
        for _ in range(3):
            conn.execute("SELECT 1 FROM pg_proc LIMIT 1")  # folded, each execution counted
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT 1 FROM pw_no_such_table")  # folded and failing
    assert m("poolwatch_query_summaries_folded_total") == 4
    other = {"db_system_name": "postgresql", "db_operation_name": "", "db_query_summary": "other"}
    assert m("db_client_operation_duration_seconds_count", error_type="", **other) == 3
