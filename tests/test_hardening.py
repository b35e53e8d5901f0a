"""Issue #13 items 5-10: bad input, names of dropped engines, gauges that follow the connection,
instrument() mid-flight, repeated instrument(), wait quantiles bounded by the pool's timeout.

Each test failed on the code before the fix; all run on the real PostgreSQL where a pool is
involved.
"""

from __future__ import annotations

import gc
import logging
import threading

import pytest
import sqlalchemy
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine, event, text

import poolwatch
from tests.support.pools import Reader, app_name, queue_truth, server_connections

# -- item 5: bad configuration fails at instrument(), naming the setting -----------------------


@pytest.mark.parametrize("addr", ["a b c", "http://0.0.0.0:9464", "999.1.1.1", "0.0.0.0:9464", ""])
def test_a_bad_addr_is_refused_at_instrument(make_engine, addr: str) -> None:
    with pytest.raises(ValueError, match=r"invalid addr=.*; addr accepts an IP address"):
        poolwatch.instrument(make_engine("sqlite://"), registry=CollectorRegistry(), addr=addr)


@pytest.mark.parametrize("addr", ["0.0.0.0", "127.0.0.1", "::", "[::1]", "localhost", "db-1.internal"])
def test_good_addrs_are_accepted(addr: str) -> None:
    from poolwatch.core.config import resolve_settings

    assert resolve_settings({"addr": addr}).addr == addr.strip("[]")


@pytest.mark.parametrize(
    ("setting", "value", "accepts"),
    [
        ("registry", "str", "a prometheus_client CollectorRegistry or None"),
        ("tracer_provider", "str", "an OpenTelemetry TracerProvider or None"),
        ("meter_provider", 42, "an OpenTelemetry MeterProvider or None"),
    ],
)
def test_objects_of_the_wrong_type_name_the_setting(make_engine, setting, value, accepts) -> None:
    with pytest.raises(TypeError, match=rf"invalid {setting}=.*; {setting} accepts {accepts}"):
        poolwatch.instrument(make_engine("sqlite://"), **{setting: value})
    with pytest.raises(TypeError, match=rf"invalid {setting}="):
        poolwatch.instrument(**{setting: value})  # the automatic mode too


def test_an_unknown_setting_lists_every_setting() -> None:
    with pytest.raises(TypeError) as info:
        poolwatch.instrument(create_engine("sqlite://"), leak_treshold=5)  # type: ignore[call-arg]
    message = str(info.value)
    assert "unknown setting(s) ['leak_treshold']" in message
    for setting in ("registry", "tracer_provider", "meter_provider", "leak_threshold", "name"):
        assert f"'{setting}'" in message


# -- item 6: a name is free again once its engine is gone or disposed ---------------------------


def test_a_name_is_reusable_after_dispose_and_del_in_a_loop(postgres_url: str) -> None:
    registry = CollectorRegistry()
    for _ in range(50):
        engine = create_engine(postgres_url, pool_size=1)
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        poolwatch.instrument(engine, name="orders-rebuilt", registry=registry)
        engine.dispose()
        del engine  # in reference cycles until a garbage collection: not collected yet
    gc.collect()


def test_default_names_collect_no_suffixes_when_engines_are_rebuilt(postgres_url: str) -> None:
    registry = CollectorRegistry()
    names = set()
    for _ in range(10):
        engine = create_engine(postgres_url)
        names.add(poolwatch.instrument(engine, registry=registry).name)
        engine.dispose()
        del engine
    assert names == {"127.0.0.1:5432/test"}
    gc.collect()


def test_a_second_live_engine_under_the_same_name_still_raises(engines) -> None:
    registry = CollectorRegistry()
    first = engines()
    poolwatch.instrument(first, name="orders-live", registry=registry)
    with first.connect() as c:
        c.execute(text("SELECT 1"))
    with pytest.raises(ValueError, match="name='orders-live' is already used"):
        poolwatch.instrument(engines(), name="orders-live", registry=registry)
    # Disposed but used again afterwards: still the holder.
    first.dispose()
    with first.connect() as c:
        c.execute(text("SELECT 1"))
    with pytest.raises(ValueError, match="name='orders-live' is already used"):
        poolwatch.instrument(engines(), name="orders-live", registry=registry)


# -- item 7: a connection SQLAlchemy closes without an event is not counted --------------------


def test_a_failing_connect_listener_leaves_no_phantom_idle_connections(
    engines, postgres_url: str
) -> None:
    app = app_name()
    engine = engines(
        pool_size=4, max_overflow=0, connect_args={"application_name": app}, pool_timeout=2
    )
    registry = CollectorRegistry()
    handle = poolwatch.instrument(engine, registry=registry)
    fail = threading.Event()

    @event.listens_for(engine, "connect")
    def set_role(dbapi_connection, record) -> None:  # after poolwatch's own listener
        if fail.is_set():
            with dbapi_connection.cursor() as cur:
                cur.execute("SET ROLE no_such_role_poolwatch")

    held = engine.connect()
    fail.set()
    for _ in range(3):
        with pytest.raises(sqlalchemy.exc.DBAPIError, match="no_such_role_poolwatch"):
            engine.connect()
    m = Reader(registry, handle.name)
    assert (m.used, m.idle) == (1, 0)
    assert queue_truth(engine) == (1, 0)
    assert server_connections(postgres_url, app) == 1
    held.close()
    assert (m.used, m.idle) == (0, 1)


# -- item 8: connections out at instrument() are counted when they come back -------------------


def test_a_connection_checked_out_before_instrument_is_idle_once_returned(
    engines, postgres_url: str
) -> None:
    app = app_name()
    engine = engines(pool_size=3, connect_args={"application_name": app})
    idle_before = engine.connect()
    held = engine.connect()
    held.execute(text("SELECT 1"))
    idle_before.close()  # one idle in the pool, one held: two connections
    registry = CollectorRegistry()
    handle = poolwatch.instrument(engine, registry=registry)
    m = Reader(registry, handle.name)
    held.close()
    assert (m.used, m.idle) == (0, 2)
    assert queue_truth(engine) == (0, 2)
    assert server_connections(postgres_url, app) == 2


def test_refining_the_automatic_mode_keeps_a_held_connection(postgres_url: str) -> None:
    registry = CollectorRegistry()
    auto = poolwatch.instrument(registry=registry)
    app = app_name()
    try:
        engine = sqlalchemy.create_engine(postgres_url, connect_args={"application_name": app})
        held = engine.connect()
        held.execute(text("SELECT 1"))
        handle = poolwatch.instrument(engine, name="refined-held", registry=registry)
        m = Reader(registry, handle.name)
        assert (m.used, m.idle) == (1, 0)
        held.close()
        assert (m.used, m.idle) == (0, 1)
        assert server_connections(postgres_url, app) == 1
        handle.uninstrument()
        engine.dispose()
    finally:
        auto.uninstrument()


# -- item 9: a repeated instrument() says which settings it did not apply ----------------------


def test_repeat_instrument_warns_once_per_setting_that_differs(make_engine, caplog) -> None:
    engine = make_engine("sqlite://")
    registry = CollectorRegistry()
    first = poolwatch.instrument(engine, registry=registry, name="warned", leak_threshold=30)
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        again = poolwatch.instrument(engine, registry=registry, name="other", leak_threshold=5)
        poolwatch.instrument(engine, registry=registry, name="other", leak_threshold=5)
        poolwatch.instrument(engine, registry=registry, name="warned", leak_threshold=30)
    assert again is first
    warnings = [r.getMessage() for r in caplog.records if "already instrumented" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert any("name='other' ignored, name='warned' stays in force" in w for w in warnings)
    assert any("leak_threshold=5.0 ignored, leak_threshold=30.0 stays in force" in w for w in warnings)


# -- item 10: no wait quantile above the pool's timeout, whatever the buckets ------------------


def test_wait_quantiles_never_exceed_a_timeout_between_buckets(engines) -> None:
    engine: Engine = engines(pool_size=1, max_overflow=0, pool_timeout=0.3)
    registry = CollectorRegistry()
    handle = poolwatch.instrument(engine, registry=registry)
    m = Reader(registry, handle.name)
    held = engine.connect()
    for _ in range(3):
        with pytest.raises(sqlalchemy.exc.TimeoutError):
            engine.connect()
    held.close()
    # 0.3 lies between the default buckets 0.25 and 0.5: it is a bound of this pool's waits.
    assert m("db_client_connection_wait_time_seconds_bucket", le="0.3") == 4
    assert m("db_client_connection_wait_time_seconds_count") == 4
    assert m("db_client_connection_wait_time_seconds_bucket", le="0.25") == 1
    assert m("db_client_connection_timeouts_total") == 3


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus's histogram_quantile on cumulative (le, count) pairs."""
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1e-12)
        prev_le, prev_count = le, count
    return prev_le


def test_p99_of_waits_that_time_out_reads_the_timeout(engines) -> None:
    engine = engines(pool_size=1, max_overflow=0, pool_timeout=2)
    registry = CollectorRegistry()
    handle = poolwatch.instrument(engine, registry=registry, pool_buckets=(0.1, 1.0, 2.5))
    held = engine.connect()
    with pytest.raises(sqlalchemy.exc.TimeoutError):
        engine.connect()
    held.close()
    buckets = []
    for family in registry.collect():
        if family.name == "db_client_connection_wait_time_seconds":
            for s in family.samples:
                if s.name.endswith("_bucket") and s.labels["db_client_connection_pool_name"] == handle.name:
                    buckets.append((float(s.labels["le"]), s.value))
    buckets.sort()
    assert [le for le, _ in buckets] == [0.1, 1.0, 2.0, 2.5, float("inf")]
    assert _quantile(buckets, 0.99) <= 2.0


