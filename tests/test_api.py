"""The public API: instrument/uninstrument, configuration, the URL plugin, all-engines mode."""

from __future__ import annotations

import gc
import logging
import socket
import urllib.request
import weakref

import pytest
import sqlalchemy
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import create_engine, event, text

import poolwatch
from poolwatch.core.config import resolve_settings
from poolwatch.sources.sqlalchemy.source import default_pool_name
from tests.support.pools import Reader
from tests.support.services import free_port


def test_instrumenting_twice_is_harmless(registry, make_engine) -> None:
    engine = make_engine("sqlite://")
    first = poolwatch.instrument(engine, registry=registry)
    second = poolwatch.instrument(engine, registry=registry)
    assert first is second
    with engine.connect() as c:
        c.execute(text("SELECT 1"))
    m = Reader(registry, first.name)
    assert m("db_client_connection_wait_time_seconds_count") == 1
    assert m("db_client_connection_use_time_seconds_count") == 1


def test_uninstrument_removes_exactly_what_was_added(registry, make_engine) -> None:
    engine = make_engine("sqlite://")

    def users_listener(*args: object) -> None:
        pass

    event.listen(engine, "checkin", users_listener)
    dialect_before = dict(engine.dialect.__dict__)
    handle = poolwatch.instrument(engine, registry=registry)
    assert {"connect", "recreate", "_return_conn"} <= set(engine.pool.__dict__)
    handle.uninstrument()
    handle.uninstrument()  # idempotent
    assert not handle.active
    assert not {"connect", "recreate", "_return_conn"} & set(engine.pool.__dict__)
    assert dict(engine.dialect.__dict__) == dialect_before
    assert event.contains(engine, "checkin", users_listener)
    pool_listeners = [fn for fn in engine.pool.dispatch.checkin]
    assert pool_listeners == [users_listener]
    assert handle.name not in generate_latest(registry).decode()
    with engine.connect() as c:
        c.execute(text("SELECT 1"))
    assert (
        registry.get_sample_value(
            "db_client_connection_wait_time_seconds_count",
            {"db_client_connection_pool_name": handle.name},
        )
        is None
    )
    # A later instrument() starts afresh, with the same name.
    again = poolwatch.instrument(engine, registry=registry)
    assert again is not handle and again.name == handle.name
    assert poolwatch.uninstrument(engine) is True
    assert poolwatch.uninstrument(engine) is False


def test_uninstrument_after_dispose_leaves_no_listeners(registry, make_engine) -> None:
    engine = make_engine("sqlite://")
    handle = poolwatch.instrument(engine, registry=registry)
    engine.dispose()
    assert "connect" in engine.pool.__dict__  # the new pool was followed
    handle.uninstrument()
    assert not {"connect", "recreate", "_return_conn"} & set(engine.pool.__dict__)
    for name in ("checkin", "connect", "close", "detach", "invalidate", "soft_invalidate"):
        ours = [
            fn for fn in getattr(engine.pool.dispatch, name)
            if type(getattr(fn, "__self__", None)).__module__.startswith("poolwatch")
        ]  # fmt: skip
        assert ours == [], name


def test_default_name_has_no_credentials() -> None:
    url = sqlalchemy.engine.make_url("postgresql+psycopg://alice:s3cr3t@db.internal:6432/orders")
    assert default_pool_name(url) == "db.internal:6432/orders"
    assert default_pool_name(sqlalchemy.engine.make_url("postgresql://u:p@h/db")) == "h:5432/db"
    assert default_pool_name(sqlalchemy.engine.make_url("sqlite://")) == "sqlite::memory:"


def test_explicit_names_must_be_unique_and_derived_ones_are_suffixed(registry, make_engine) -> None:
    a, b, c = (make_engine("sqlite://") for _ in range(3))
    poolwatch.instrument(a, name="primary", registry=registry)
    with pytest.raises(ValueError, match="name='primary' is already used"):
        poolwatch.instrument(b, name="primary", registry=registry)
    first = poolwatch.instrument(b, registry=registry)
    second = poolwatch.instrument(c, registry=registry)
    assert (first.name, second.name) == ("sqlite::memory:", "sqlite::memory:#2")


def test_primary_and_replica_side_by_side_with_user_labels(registry, make_engine) -> None:
    from sqlalchemy.pool import QueuePool

    primary = make_engine("sqlite://", poolclass=QueuePool)
    replica = make_engine("sqlite://", poolclass=QueuePool)
    poolwatch.instrument(primary, name="orders", labels={"role": "primary"}, registry=registry)
    poolwatch.instrument(replica, name="orders-ro", labels={"role": "replica"}, registry=registry)
    with primary.connect(), replica.connect(), replica.connect():
        assert registry.get_sample_value(
            "db_client_connection_count",
            {"db_client_connection_pool_name": "orders-ro", "role": "replica",
             "db_client_connection_state": "used"},
        ) == 2  # fmt: skip
    with pytest.raises(ValueError, match=r"labels=.*adds label"):
        poolwatch.instrument(make_engine("sqlite://"), labels={"team": "x"}, registry=registry)


def test_the_typed_options_are_every_setting() -> None:
    # A setting missing from Options is one a mypy-checked application cannot pass.
    from dataclasses import fields

    from poolwatch import Options, Settings

    assert set(Options.__annotations__) == {f.name for f in fields(Settings)} | {
        "registry", "tracer_provider", "meter_provider"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"leak_threshold": -1},
            "leak_threshold=-1; leak_threshold accepts a number of seconds > 0",
        ),
        ({"port": 70000}, "port=70000; port accepts a whole number from 1 to 65535"),
        ({"max_query_summaries": 0}, "max_query_summaries accepts a whole number from 1 to 10000"),
        ({"labels": {"le": "x"}}, "labels accepts a mapping of label names"),
        ({"pool_buckets": [1, 0.5]}, "pool_buckets accepts an increasing sequence"),
        ({"statement_metrics": "maybe"}, "statement_metrics accepts true/false"),
    ],
)
def test_bad_configuration_fails_at_startup_naming_the_setting(
    make_engine, kwargs, message
) -> None:
    with pytest.raises(ValueError) as err:
        poolwatch.instrument(make_engine("sqlite://"), registry=CollectorRegistry(), **kwargs)
    assert message in str(err.value)


def test_settings_come_from_the_environment() -> None:
    env = {
        "POOLWATCH_LEAK_THRESHOLD": "2.5",
        "POOLWATCH_LABELS": "role=replica, team=payments",
        "POOLWATCH_PORT": "9464",
        "POOLWATCH_STATEMENT_METRICS": "off",
        "POOLWATCH_MAX_QUERY_SUMMARIES": "20",
    }
    s = resolve_settings({}, env)
    assert (s.leak_threshold, s.port, s.statement_metrics, s.max_query_summaries) == (
        2.5, 9464, False, 20,
    )  # fmt: skip
    assert dict(s.labels) == {"role": "replica", "team": "payments"}
    assert resolve_settings({"leak_threshold": None}, env).leak_threshold is None  # kwarg wins
    with pytest.raises(ValueError, match="POOLWATCH_PORT='http'; port accepts"):
        resolve_settings({}, {"POOLWATCH_PORT": "http"})


def test_url_plugin_activates_poolwatch(postgres_url, registry) -> None:
    from prometheus_client import REGISTRY

    engine = create_engine(postgres_url + "?plugin=poolwatch&poolwatch_name=via-url")
    try:
        assert "plugin" not in engine.url.query and "poolwatch_name" not in engine.url.query
        handle = poolwatch.instrumented(engine)
        assert handle is not None and handle.name == "via-url"
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        assert REGISTRY.get_sample_value(
            "db_client_connection_count",
            {"db_client_connection_pool_name": "via-url", "db_client_connection_state": "idle"},
        ) == 1  # fmt: skip
    finally:
        poolwatch.uninstrument(engine)
        engine.dispose()
    with pytest.raises(ValueError, match="leak_threshold"):
        create_engine("sqlite://?plugin=poolwatch&poolwatch_leak_threshold=soon")


def test_instrument_without_engine_covers_engines_created_afterwards(registry) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    handle = poolwatch.instrument(registry=registry)
    try:
        assert poolwatch.instrument(registry=registry) is handle
        sync = sqlalchemy.create_engine("sqlite://")
        from sqlalchemy import ext

        async_engine = ext.asyncio.create_async_engine("sqlite+aiosqlite://")
        assert poolwatch.instrumented(sync) is not None
        assert poolwatch.instrumented(async_engine) is not None
        # An explicit call refines the automatic one.
        named = poolwatch.instrument(sync, name="named", registry=registry)
        assert named.name == "named"
    finally:
        handle.uninstrument()
    assert sqlalchemy.create_engine is not None
    assert not hasattr(sqlalchemy.create_engine, "_poolwatch_all")
    assert not hasattr(create_async_engine, "_poolwatch_all")
    assert poolwatch.instrumented(async_engine) is None
    assert poolwatch.instrumented(sync) is named  # explicit instrumentation stays
    named.uninstrument()
    sync.dispose()


def test_dropped_engines_are_collected_with_their_series(registry) -> None:
    engine = create_engine("sqlite://")
    handle = poolwatch.instrument(engine, name="ephemeral", registry=registry)
    with engine.connect() as c:
        c.execute(text("SELECT 1"))
    ref = weakref.ref(engine)
    del engine, c
    gc.collect()
    assert ref() is None
    assert not handle.active
    # Gone from the very first scrape, counters and histograms included.
    assert "ephemeral" not in generate_latest(registry).decode()
    assert registry.get_sample_value(
        "db_client_connection_count",
        {"db_client_connection_pool_name": "ephemeral", "db_client_connection_state": "idle"},
    ) is None  # fmt: skip
    poolwatch.instrument(create_engine("sqlite://"), name="ephemeral", registry=registry)


def test_a_dropped_engines_instrumentation_is_freed_not_kept_by_its_name(registry) -> None:
    """An application that makes engines per tenant or per job, each under its own name, must not
    grow by a pool's worth of trackers and histograms (tens of KiB) per engine it dropped."""
    handles = []
    for i in range(5):
        engine = create_engine("sqlite://")
        handle = poolwatch.instrument(engine, name=f"per-job-{i}", registry=registry)
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        handles.append(weakref.ref(handle))
        del engine, c, handle
    gc.collect()
    generate_latest(registry)  # teardowns queued by the garbage collector run here
    gc.collect()
    assert [h() for h in handles] == [None] * 5


def test_http_exporter_starts_once_and_a_taken_port_is_logged(
    registry, make_engine, caplog
) -> None:
    from poolwatch.backends.prometheus import server

    if server.serving_on() is not None:
        pytest.skip("this process already serves metrics")  # pragma: no cover
    port = free_port()
    engine = make_engine("sqlite://")
    poolwatch.instrument(engine, registry=registry, port=port, addr="127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body = r.read().decode()
    assert "db_client_connection_count{" in body
    # A second pool in the same process does not start a second server.
    other = make_engine("sqlite://")
    poolwatch.instrument(other, name="second", registry=registry, port=port, addr="127.0.0.1")
    assert server.serving_on() == ("127.0.0.1", port)

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        server._serving = None  # pretend this is a fresh process
        with caplog.at_level(logging.ERROR, logger="poolwatch"):
            assert server.ensure_http_server("127.0.0.1", taken.getsockname()[1], registry) is False
        assert "cannot serve metrics" in caplog.text
    finally:
        taken.close()
        server._serving = ("127.0.0.1", port)


def test_garbage_collection_inside_a_locked_metric_does_not_deadlock(registry) -> None:
    """The collector may run the finalizer of a dropped engine inside any allocation, including
    while prometheus_client holds a metric's lock; tearing down series there would deadlock."""
    import threading

    from poolwatch.backends.prometheus.metrics import metrics_for

    engine = create_engine("sqlite://")
    handle = poolwatch.instrument(engine, name="dropped", registry=registry)
    metrics = metrics_for(registry, (), (1.0,), (1.0,))
    del engine
    done = threading.Event()

    def collect_while_locked() -> None:
        with metrics.histogram["wait_time"]._lock, metrics.histogram["operation_duration"]._lock:
            gc.collect()
        done.set()

    t = threading.Thread(target=collect_while_locked, daemon=True)
    t.start()
    t.join(10)
    assert done.is_set(), "deadlocked in a finalizer"
    assert not handle.active
    # The series go at the next safe point: here, the scrape.
    assert registry.get_sample_value(
        "db_client_connection_count",
        {"db_client_connection_pool_name": "dropped", "db_client_connection_state": "idle"},
    ) is None  # fmt: skip
