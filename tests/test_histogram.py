"""poolwatch's own histogram: the hot-path recorder counts every value exactly once, in both
builds (compiled: counted at once in C; interpreted: deferred to a queue and drained)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text

import poolwatch
from poolwatch.backends.prometheus.histogram import Histogram
from poolwatch.backends.prometheus.metrics import PrometheusTracker, histogram_families, metrics_for
from poolwatch.core.state import PoolState
from poolwatch.core.tracker import PENDING_LIMIT
from poolwatch.sql.summary import summarize_sql

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def test_recorded_values_are_folded_in_when_read(build: str) -> None:
    child = Histogram("h_seconds", "h", ["pool"], BUCKETS).labels("p")
    for v in (0.0005, 0.001, 0.002, 0.5, 2.0, 2.0):
        child.record(v)
    assert child.pending() == (6 if build == "interpreted" else 0)
    counts, total, exemplars = child.snapshot()
    # Cumulative, upper bounds inclusive (le), +Inf last.
    assert counts == [2, 3, 3, 4, 6]
    assert total == 0.0005 + 0.001 + 0.002 + 0.5 + 2.0 + 2.0
    assert exemplars == {}
    assert child.pending() == 0
    child.observe(0.05)  # the immediate path still works alongside
    assert child.snapshot()[0] == [2, 3, 4, 5, 7]


def test_concurrent_recorders_and_drainers_lose_nothing(build: str) -> None:
    child = Histogram("h_seconds", "h", ["pool"], BUCKETS).labels("p")
    threads, per_thread = 8, 20_000
    values = (2.0**-10, 0.25, 4.0)  # exact in binary: the sum can be checked exactly
    stop = threading.Event()

    def record() -> None:
        rec, pending, drain = child.record, child.pending, child.drain
        for i in range(per_thread):
            rec(values[i % 3])
            if pending() > PENDING_LIMIT:
                drain()

    def scrape() -> None:
        while not stop.is_set():
            child.snapshot()

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=record) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    scraper.join()
    counts, total, _ = child.snapshot()
    n = threads * per_thread
    per_value = [len(range(k, per_thread, 3)) * threads for k in range(3)]
    assert counts[-1] == n
    assert counts == [per_value[0], per_value[0], per_value[0], per_value[0] + per_value[1], n]
    assert total == sum(v * c for v, c in zip(values, per_value, strict=True))


def test_tracker_keeps_the_queues_bounded_through_checkins(build: str) -> None:
    registry = CollectorRegistry()
    metrics = metrics_for(registry, {}, BUCKETS, BUCKETS)
    tracker = PrometheusTracker(metrics, PoolState("bounded"), {}, "postgresql")
    wait_child = metrics.histogram["wait_time"].labels("bounded")
    use_child = metrics.histogram["use_time"].labels("bounded")
    for _ in range(10 * PENDING_LIMIT):
        # What the pool listeners do: a checkout's wait, the check, its checkin's use.
        tracker.wait(0.002)
        if tracker.pending() > PENDING_LIMIT:
            tracker.drain()
        tracker.use(0.02)
        assert wait_child.pending() <= PENDING_LIMIT
        assert use_child.pending() <= PENDING_LIMIT + 1
    # Interpreted, drained every 129 checkouts: 1,280 = 9 x 129 + 119 waits since the last
    # drain, and the use recorded after it. Compiled, nothing is ever queued.
    expected = (119, 120) if build == "interpreted" else (0, 0)
    assert (wait_child.pending(), use_child.pending()) == expected
    labels = {"db_client_connection_pool_name": "bounded"}
    count = registry.get_sample_value("db_client_connection_wait_time_seconds_count", labels)
    assert count == 10 * PENDING_LIMIT
    assert registry.get_sample_value("db_client_connection_use_time_seconds_count", labels) == (
        10 * PENDING_LIMIT
    )
    assert registry.get_sample_value(
        "db_client_connection_use_time_seconds_bucket", {**labels, "le": "0.01"}
    ) == 0
    assert registry.get_sample_value(
        "db_client_connection_use_time_seconds_bucket", {**labels, "le": "0.1"}
    ) == 10 * PENDING_LIMIT
    statement = tracker.statement("SELECT", "SELECT t")
    child = metrics.histogram["operation_duration"].labels("bounded", "postgresql", "SELECT", "SELECT t", "")
    assert statement is child  # no exemplars: the histogram child itself is the sink
    tracker.close()


def test_drain_counts_bucket_boundaries_and_extremes_exactly(build: str) -> None:
    child = Histogram("h_seconds", "h", ["pool"], BUCKETS).labels("p")
    # Values on each bound belong to it (le), below the first, above the last; unsorted.
    values = [1.0, 0.0, 0.1, 5.0, 0.001, 0.01, 0.0100001, 1e-9, 0.001, 1.0000001]
    for v in values:
        child.record(v)
    child.drain()
    for v in (0.5, 0.5):  # a second batch lands on top of the first
        child.record(v)
    counts, total, _ = child.snapshot()
    assert counts == [4, 5, 7, 10, 12]
    assert total == sum(values) + 1.0


def test_instrumented_engine_keeps_every_queue_bounded_without_a_scrape(
    build: str, postgres_url: str, make_engine: Callable[..., Engine]
) -> None:
    # The listeners, not a scrape, must drain: an application nobody scrapes must not grow.
    registry = CollectorRegistry()
    engine = make_engine(postgres_url, pool_size=2, max_overflow=0)
    poolwatch.instrument(engine, registry=registry, name="unscraped")
    with engine.connect() as c:
        c.execute(text("SELECT 1"))  # first connect: the dialect's set-up runs outside the loop
    families = {h.name: h for h in histogram_families(registry)}
    wait, use, statements = (
        families[f"db_client_{name}_seconds"]
        for name in ("connection_wait_time", "connection_use_time", "operation_duration")
    )
    summary = summarize_sql("SELECT 1")
    (select1,) = [c for c in statements.children() if c.label_values[-2] == summary]

    before = [child.snapshot()[0][-1] for child in (*wait.children(), *use.children(), select1)]
    n = 3 * PENDING_LIMIT + 7
    peak = 0
    for _ in range(n):
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        peak = max(peak, *(ch.pending() for ch in (*wait.children(), *use.children(), select1)))
    # Interpreted, each queue is drained when it passes the limit (a use can land just after
    # the drain its checkout triggered); without the listeners' drains it would hold all n
    # values. Compiled, values are counted as they are recorded.
    if build == "interpreted":
        assert PENDING_LIMIT <= peak <= PENDING_LIMIT + 1
    else:
        assert peak == 0
    after = [child.snapshot()[0][-1] for child in (*wait.children(), *use.children(), select1)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [n, n, n]
