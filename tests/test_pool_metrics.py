"""The contract's pool metrics against a real PostgreSQL, with exact values."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref

import pytest
import sqlalchemy
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.pool import NullPool, SingletonThreadPool, StaticPool

import poolwatch
from tests.support.pools import Reader, app_name, queue_truth, server_connections


@pytest.fixture(params=["return_conn", "checkin_event"])
def checkin_seam(request, monkeypatch) -> str:  # type: ignore[no-untyped-def]
    """Both ways poolwatch sees a checkin: the pool's ``_return_conn`` (what SQLAlchemy 2.0 and
    2.1 have) and the ``checkin`` event it falls back to for a pool without that method."""
    if request.param == "checkin_event":
        monkeypatch.setattr(poolwatch.sources.sqlalchemy._compat, "RETURN_SEAM", "_no_such_method")
    return str(request.param)


def _until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def test_five_callers_on_three_connections(
    postgres_url, registry, make_engine, checkin_seam
) -> None:
    name = app_name()
    engine = make_engine(
        postgres_url, pool_size=2, max_overflow=1, pool_timeout=10,
        connect_args={"application_name": name},
    )  # fmt: skip
    handle = poolwatch.instrument(engine, name="five", registry=registry)
    wrapped = "_return_conn" in engine.pool.__dict__
    assert wrapped is (checkin_seam == "return_conn")
    assert bool(engine.pool.dispatch.checkin) is (checkin_seam == "checkin_event")
    m = Reader(registry, handle.name)
    assert m("db_client_connection_max") == 3
    assert m("db_client_connection_idle_max") == 2
    assert m.get("db_client_connection_idle_min") is None  # QueuePool has no such setting

    start = threading.Barrier(6)

    def hold() -> None:
        start.wait()
        with engine.connect() as c:
            c.execute(text("SELECT pg_sleep(1)"))

    threads = [threading.Thread(target=hold) for _ in range(5)]
    for t in threads:
        t.start()
    start.wait()
    _until(lambda: m.used == 3 and m.pending == 2)
    assert (m.used, m.pending, m.idle) == (3, 2, 0)
    assert server_connections(postgres_url, name) == 3
    for t in threads:
        t.join()

    _, idle = queue_truth(engine)
    assert (m.used, m.pending) == (0, 0)
    assert m.idle == idle == engine.pool.checkedin() == 2
    assert server_connections(postgres_url, name) == 2
    assert m("db_client_connection_wait_time_seconds_count") == 5
    assert m.waits_at_least(0.5) == 2  # the two callers that waited for a whole pg_sleep(1)
    assert m("db_client_connection_wait_time_seconds_bucket", le="0.25") == 3
    assert m("db_client_connection_use_time_seconds_count") == 5
    assert m("db_client_connection_create_time_seconds_count") == 3
    assert m("db_client_connection_timeouts_total") == 0


def test_timeouts_are_counted_and_the_pools_own_error_reaches_the_caller(
    postgres_url, registry, make_engine
) -> None:
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    # The connection opened before instrument(): the held checkout below then comes from idle,
    # well under the 0.1 s bound however slow a connect is on a loaded machine.
    engine.connect().close()
    handle = poolwatch.instrument(engine, registry=registry, pool_buckets=(0.1, 0.2, 0.3))
    m = Reader(registry, handle.name)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            with engine.connect() as c:
                c.execute(text("SELECT 1"))
        except BaseException as e:
            errors.append(e)

    with engine.connect():
        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(errors) == 3
    assert all(type(e) is sqlalchemy.exc.TimeoutError for e in errors)
    assert "QueuePool limit of size 1 overflow 0 reached" in str(errors[0])
    assert m("db_client_connection_timeouts_total") == 3
    assert m("db_client_connection_wait_time_seconds_count") == 4
    assert m.waits_at_least(0.1) == 3
    # A timed-out wait is recorded as pool_timeout, so it falls in the bucket whose bound is the
    # timeout, not the next one: a p99 read off the histogram never exceeds the timeout.
    assert m("db_client_connection_wait_time_seconds_bucket", le="0.2") == 4
    assert m("db_client_connection_wait_time_seconds_bucket", le="0.1") == 1
    assert (m.used, m.pending, m.idle) == (0, 0, 1)


# SQLAlchemy returns connections checked out before dispose() to the old pool, which closes them
# only when it is garbage collected; psycopg warns when that happens. That is the behaviour under
# test here (poolwatch must not keep the old pool alive), so its warning is expected.
@pytest.mark.usefixtures("checkin_seam")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_gauges_follow_the_new_pool_after_dispose(postgres_url, registry, make_engine) -> None:
    name = app_name()
    engine = make_engine(
        postgres_url, pool_size=2, max_overflow=2, connect_args={"application_name": name}
    )
    handle = poolwatch.instrument(engine, registry=registry)
    m = Reader(registry, handle.name)
    with engine.connect():
        pass  # leaves one idle connection behind
    a, b = engine.connect(), engine.connect()
    assert (m.used, m.idle) == (2, 0)
    old_pool = weakref.ref(engine.pool)
    engine.dispose()  # closes the idle ones, swaps in a new pool; a and b stay checked out
    assert (m.used, m.idle) == (2, 0)
    c = engine.connect()  # from the new, wrapped pool
    assert (m.used, m.idle) == (3, 0)
    assert m("db_client_connection_wait_time_seconds_count") == 4
    a.close()
    b.close()
    c.close()
    # a and b went back to the old pool, which the engine no longer uses.
    assert (m.used, m.idle, m.pending) == (0, 1, 0)
    assert queue_truth(engine) == (0, 1)
    engine.dispose()
    assert (m.used, m.idle) == (0, 0)
    del a, b, c
    gc.collect()  # the old pool's connections close when it is collected...
    assert old_pool() is None  # ...which poolwatch must not prevent
    assert server_connections(postgres_url, name) == 0


@pytest.mark.usefixtures("checkin_seam")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_dispose_without_closing(postgres_url, registry, make_engine) -> None:
    engine = make_engine(postgres_url, pool_size=2)
    handle = poolwatch.instrument(engine, registry=registry)
    m = Reader(registry, handle.name)
    with engine.connect():
        pass
    held = engine.connect()
    engine.dispose(close=False)
    assert (m.used, m.idle) == (1, 0)
    held.close()
    assert (m.used, m.idle) == (0, 0)
    with engine.connect():
        assert (m.used, m.idle) == (1, 0)
    assert (m.used, m.idle) == (0, 1)
    gc.collect()  # dispose(close=False) left the old pool's idle connection to the collector


@pytest.mark.usefixtures("checkin_seam")
def test_terminated_backend_is_invalidated_without_drift(
    postgres_url, registry, make_engine
) -> None:
    name = app_name()
    engine = make_engine(postgres_url, pool_size=3, connect_args={"application_name": name})
    handle = poolwatch.instrument(engine, registry=registry)
    m = Reader(registry, handle.name)
    with engine.connect() as other:
        other.execute(text("SELECT 1"))
    conn = engine.connect()
    pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with engine.connect() as killer:
        killer.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    with pytest.raises(sqlalchemy.exc.OperationalError):
        conn.execute(text("SELECT 1"))
    conn.close()
    # 57P01 admin_shutdown: SQLSTATE class 57, operator intervention.
    assert (
        m("poolwatch_connection_invalidations_total", kind="hard", reason="operator_intervention")
        == 1
    )
    used, idle = queue_truth(engine)
    assert (m.used, m.idle) == (used, idle) == (0, server_connections(postgres_url, name))
    with engine.connect() as again:
        assert again.execute(text("SELECT 1")).scalar_one() == 1
    assert (m.used, m.idle) == queue_truth(engine)


@pytest.mark.usefixtures("checkin_seam")
def test_detach_takes_the_connection_out_of_the_pool(postgres_url, registry, make_engine) -> None:
    name = app_name()
    engine = make_engine(postgres_url, pool_size=2, connect_args={"application_name": name})
    handle = poolwatch.instrument(engine, registry=registry)
    m = Reader(registry, handle.name)
    conn = engine.connect()
    conn.connection.detach()
    assert (m.used, m.idle) == (0, 0)
    assert conn.execute(text("SELECT 1")).scalar_one() == 1
    assert m("db_client_connection_use_time_seconds_count") == 1
    conn.close()
    assert (m.used, m.idle) == (0, 0) == queue_truth(engine)
    assert server_connections(postgres_url, name) == 0


@pytest.mark.usefixtures("checkin_seam")
def test_hard_and_soft_invalidation(postgres_url, registry, make_engine) -> None:
    engine = make_engine(postgres_url, pool_size=2)
    handle = poolwatch.instrument(engine, registry=registry)
    m = Reader(registry, handle.name)
    conn = engine.connect()
    conn.invalidate()  # closes the DBAPI connection and returns the record at once
    assert m("poolwatch_connection_invalidations_total", kind="hard", reason="none") == 1
    assert (m.used, m.idle) == (0, 0) == queue_truth(engine)
    conn.close()
    assert (m.used, m.idle) == (0, 0) == queue_truth(engine)

    conn = engine.connect()
    conn.connection.invalidate(soft=True)
    assert m("poolwatch_connection_invalidations_total", kind="soft", reason="none") == 1
    assert (m.used, m.idle) == (1, 0)
    conn.close()
    assert (m.used, m.idle) == (0, 1) == queue_truth(engine)
    time.sleep(0.02)  # soft invalidation compares timestamps with time.time()
    with engine.connect():  # recycled on checkout: closed and reopened
        assert (m.used, m.idle) == (1, 0)
    assert (m.used, m.idle) == (0, 1) == queue_truth(engine)
    assert m("db_client_connection_create_time_seconds_count") == 3


def test_async_engine_with_psycopg(postgres_url, registry) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(postgres_url, pool_size=2, max_overflow=1, pool_timeout=10)
    handle = poolwatch.instrument(engine, registry=registry)
    m = Reader(registry, handle.name)
    seen: list[tuple[float | None, float | None, float | None]] = []

    async def hold() -> None:
        async with engine.connect() as c:
            await c.execute(text("SELECT pg_sleep(0.6)"))

    async def main() -> None:
        tasks = [asyncio.create_task(hold()) for _ in range(5)]
        await asyncio.sleep(0.3)
        seen.append((m.used, m.pending, m.idle))
        await asyncio.gather(*tasks)
        await engine.dispose()

    try:
        asyncio.run(main())
    finally:
        handle.uninstrument()
    assert seen == [(3, 2, 0)]
    assert handle.name == "127.0.0.1:5432/" + engine.url.database


def test_async_engine_counts_after_load(postgres_url, registry) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(postgres_url, pool_size=2, max_overflow=1)
    handle = poolwatch.instrument(engine, registry=registry)
    m = Reader(registry, handle.name)
    after: list[object] = []

    async def main() -> None:
        async def one() -> None:
            async with engine.connect() as c:
                await c.execute(text("SELECT pg_sleep(0.1)"))

        await asyncio.gather(*(one() for _ in range(6)))
        after.append((m.used, m.pending, m.idle, engine.sync_engine.pool.checkedin()))
        after.append(m("db_client_connection_wait_time_seconds_count"))
        await engine.dispose()

    try:
        asyncio.run(main())
    finally:
        handle.uninstrument()
    assert after == [(0, 0, 2, 2), 6]


@pytest.mark.usefixtures("checkin_seam")
def test_null_pool(postgres_url, registry, make_engine) -> None:
    name = app_name()
    engine = make_engine(postgres_url, poolclass=NullPool, connect_args={"application_name": name})
    handle = poolwatch.instrument(engine, registry=registry)
    m = Reader(registry, handle.name)
    assert m.get("db_client_connection_max") is None  # unbounded: absent, never wrong
    assert m("db_client_connection_idle_max") == 0
    with engine.connect() as a, engine.connect() as b:
        a.execute(text("SELECT 1"))
        b.execute(text("SELECT 1"))
        assert (m.used, m.idle) == (2, 0)
        assert server_connections(postgres_url, name) == 2
    assert (m.used, m.idle, m.pending) == (0, 0, 0)
    assert server_connections(postgres_url, name) == 0
    assert m("db_client_connection_create_time_seconds_count") == 2
    assert m("db_client_connection_use_time_seconds_count") == 2
    assert registry.get_sample_value(
        "poolwatch_pool_info",
        {"db_client_connection_pool_name": handle.name, "pool_class": "NullPool",
         "pool_size": "", "max_overflow": "", "timeout": "", "recycle": "", "pre_ping": "false",
         "server_address": "127.0.0.1", "server_port": "5432", "db_namespace": "test",
         # psycopg_pool's settings: empty (absent in Prometheus) for a SQLAlchemy pool.
         "min_size": "", "max_size": "", "max_waiting": "", "max_lifetime": "", "max_idle": ""},
    ) == 1  # fmt: skip


@pytest.mark.parametrize(
    ("poolclass", "expected_max"),
    [(StaticPool, 1.0), (SingletonThreadPool, None)],  # a gauge that does not apply is absent
)
def test_static_and_singleton_thread_pools(registry, make_engine, poolclass, expected_max) -> None:
    engine = make_engine("sqlite://", poolclass=poolclass)
    handle = poolwatch.instrument(engine, registry=registry)
    m = Reader(registry, handle.name)
    with engine.connect() as c:
        c.execute(text("SELECT 1"))
        assert (m.used, m.idle) == (1, 0)
    assert (m.used, m.idle, m.pending) == (0, 1, 0)
    assert m.get("db_client_connection_max") == expected_max


def test_pre_ping_failure_after_a_database_restart(throwaway_pg, registry, make_engine) -> None:
    engine = make_engine(throwaway_pg.url, pool_size=3, pool_pre_ping=True)
    handle = poolwatch.instrument(engine, registry=registry)
    m = Reader(registry, handle.name)
    conns = [engine.connect() for _ in range(3)]
    for c in conns:
        c.close()
    assert (m.used, m.idle) == (0, 3)
    throwaway_pg.restart()
    with engine.connect() as c:
        assert c.execute(text("SELECT 1")).scalar_one() == 1
        assert m.used == 1
    assert (
        m("poolwatch_connection_invalidations_total", kind="pre_ping", reason="InvalidatePoolError")
        == 1
    )
    # The pre-ping invalidated the whole pool: the other two were recycled on their checkout.
    for _ in range(3):
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    assert (m.used, m.idle, m.pending) == (0, *queue_truth(engine)[1:], 0)
    assert m.idle == 3


def test_database_down_counts_connection_errors(throwaway_pg, registry, make_engine) -> None:
    engine = make_engine(throwaway_pg.url, pool_size=2)
    handle = poolwatch.instrument(engine, registry=registry)
    m = Reader(registry, handle.name)
    throwaway_pg.stop()
    for _ in range(2):
        with pytest.raises(sqlalchemy.exc.OperationalError):
            engine.connect()
    assert m("poolwatch_connection_errors_total", error_type="connection_refused") == 2
    assert (m.used, m.idle, m.pending) == (0, 0, 0)
    assert m("db_client_connection_timeouts_total") == 0
    throwaway_pg.start()
    with engine.connect() as c:
        assert c.execute(text("SELECT 1")).scalar_one() == 1
    assert (m.used, m.idle) == (0, 1)


def test_fresh_registry_per_test_is_isolated() -> None:
    reg = CollectorRegistry()
    assert reg.get_sample_value("db_client_connection_count") is None


def test_connections_opened_before_instrument_count_as_idle(
    postgres_url, registry, make_engine
) -> None:
    engine = make_engine(postgres_url, pool_size=3, max_overflow=0)
    with engine.connect(), engine.connect(), engine.connect():
        pass  # three connections opened, then idle, before poolwatch is there
    handle = poolwatch.instrument(engine, registry=registry)
    m = Reader(registry, handle.name)
    assert (m.used, m.idle) == (0, 3) and queue_truth(engine) == (0, 3)
    with engine.connect():
        assert (m.used, m.idle) == (1, 2)
    assert (m.used, m.idle) == (0, 3)
