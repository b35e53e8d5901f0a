"""The multiprocess backend with real forked processes and the real PostgreSQL: one collection
of prometheus_client's multiprocess files shows the exact totals of every process."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import uuid
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric

from tests.support.pools import app_name

POOL = "db_client_connection_pool_name"
PROBE = "SELECT 1 FROM pg_database LIMIT 1"  # a summary of its own, apart from the dialect's
ctx = multiprocessing.get_context("fork")


def samples(metrics: Iterable[Metric]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value for m in metrics for s in m.samples
    }


def value(metrics: Any, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def collect(path: Path) -> list[Metric]:
    from poolwatch.backends.multiprocess import ServiceCollector

    return list(ServiceCollector(None, str(path)).collect())


def db_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("*.db"))


@pytest.fixture
def mpdir(tmp_path: Path) -> Path:
    d = tmp_path / "multiproc"
    d.mkdir()
    return d


def _worker(path: str, url: str, name: str, hold: int, statements: int, conn: Connection,
            leak_threshold: float | None = None) -> None:  # fmt: skip
    """A pre-fork worker: instruments its own engine, holds ``hold`` connections, reports."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    import sqlalchemy

    import poolwatch
    from poolwatch.backends.multiprocess import service

    engine = sqlalchemy.create_engine(
        url, pool_size=5, max_overflow=10, connect_args={"application_name": app_name()}
    )
    options: dict[str, Any] = {"name": name}
    if leak_threshold is not None:
        options.update(leak_threshold=leak_threshold, leak_stacks=False)
    poolwatch.instrument(engine, **options)
    held = [engine.connect() for _ in range(hold)]
    for _ in range(statements):
        held[0].exec_driver_sql(PROBE)
    service.flush_now()
    conn.send("held")
    conn.recv()  # "release"
    for c in held:
        c.close()
    engine.dispose()
    service.flush_now()  # what the server's worker-exit hook does
    conn.send("done")


class Workers:
    def __init__(self, path: Path, url: str, name: str) -> None:
        self.path, self.url, self.name = str(path), url, name
        self.procs: list[tuple[Any, Connection]] = []

    def start(self, hold: int, statements: int = 0, **kw: Any) -> Any:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(self.path, self.url, self.name, hold, statements,
                                              child), kwargs=kw, daemon=True)  # fmt: skip
        p.start()
        assert parent.poll(60), "worker did not start"
        assert parent.recv() == "held"
        self.procs.append((p, parent))
        return p

    def finish(self, p: Any) -> None:
        for proc, conn in self.procs:
            if proc is p:
                conn.send("release")
                assert conn.poll(60)
                assert conn.recv() == "done"
                proc.join(30)
                assert proc.exitcode == 0

    def close(self) -> None:
        for proc, _ in self.procs:
            if proc.is_alive():
                proc.kill()
            proc.join(10)


@pytest.fixture
def workers(mpdir: Path, postgres_url: str) -> Iterator[Workers]:
    w = Workers(mpdir, postgres_url, "mp-" + uuid.uuid4().hex[:8])
    try:
        yield w
    finally:
        w.close()


def test_one_collection_sums_every_live_worker(workers: Workers, mpdir: Path) -> None:
    name = workers.name
    procs = [workers.start(hold=i + 1, statements=2 * (i + 1)) for i in range(3)]
    m = collect(mpdir)
    assert value(m, "db_client_connection_count", **{POOL: name},
                 db_client_connection_state="used") == 6  # fmt: skip
    assert value(m, "db_client_connection_max", **{POOL: name}) == 3 * 15
    assert value(m, "db_client_connection_pending_requests", **{POOL: name}) == 0
    assert value(m, "db_client_connection_wait_time_seconds_count", **{POOL: name}) == 6
    assert value(m, "db_client_operation_duration_seconds_count", **{POOL: name},
                 db_system_name="postgresql", db_operation_name="SELECT",
                 db_query_summary="SELECT pg_database", error_type="") == 12  # fmt: skip
    info = [s for mm in m if mm.name == "poolwatch_pool_info" for s in mm.samples]
    assert [s.value for s in info if s.labels[POOL] == name] == [1.0]

    workers.finish(procs[0])
    m = collect(mpdir)
    assert value(m, "db_client_connection_count", **{POOL: name},
                 db_client_connection_state="used") == 5  # fmt: skip
    assert value(m, "db_client_connection_max", **{POOL: name}) == 2 * 15
    # The dead worker's counts stay (from the archive): 6 checkouts, 12 statements.
    assert value(m, "db_client_connection_wait_time_seconds_count", **{POOL: name}) == 6
    assert value(m, "db_client_connection_use_time_seconds_count", **{POOL: name}) == 1
    assert "counter_poolwatch-archive.db" in db_files(mpdir) or (
        "histogram_poolwatch-archive.db" in db_files(mpdir)
    )
    assert not [f for f in db_files(mpdir) if f.endswith(f"_{procs[0].pid}.db")]

    for p in procs[1:]:
        workers.finish(p)
    m = collect(mpdir)
    assert value(m, "db_client_connection_count", **{POOL: name},
                 db_client_connection_state="used") is None  # fmt: skip
    assert value(m, "db_client_connection_wait_time_seconds_count", **{POOL: name}) == 6
    assert value(m, "db_client_connection_use_time_seconds_count", **{POOL: name}) == 6
    assert db_files(mpdir) == ["counter_poolwatch-archive.db", "histogram_poolwatch-archive.db"]


def test_a_worker_killed_with_sigkill_drops_out_of_the_gauges(
    workers: Workers, mpdir: Path
) -> None:
    name = workers.name
    a = workers.start(hold=2, statements=3)
    b = workers.start(hold=3)
    used = {POOL: name, "db_client_connection_state": "used"}
    assert value(collect(mpdir), "db_client_connection_count", **used) == 5
    os.kill(a.pid, signal.SIGKILL)
    a.join(10)
    m = collect(mpdir)  # no exit hook ran: the collection itself finds the worker dead
    assert value(m, "db_client_connection_count", **used) == 3
    assert value(m, "db_client_connection_wait_time_seconds_count", **{POOL: name}) == 5
    workers.finish(b)
    m = collect(mpdir)
    assert value(m, "db_client_connection_wait_time_seconds_count", **{POOL: name}) == 5


def test_recycled_workers_leave_one_archive_and_exact_counts(
    workers: Workers, mpdir: Path
) -> None:
    name = workers.name
    for _ in range(12):
        workers.finish(workers.start(hold=2, statements=1))
    m = collect(mpdir)
    assert value(m, "db_client_connection_wait_time_seconds_count", **{POOL: name}) == 24
    assert value(m, "db_client_operation_duration_seconds_count", **{POOL: name},
                 db_system_name="postgresql", db_operation_name="SELECT",
                 db_query_summary="SELECT pg_database", error_type="") == 12  # fmt: skip
    assert db_files(mpdir) == ["counter_poolwatch-archive.db", "histogram_poolwatch-archive.db"]


def _forked_child_of_a_preloaded_parent(engine: Any, conn: Connection) -> None:
    from poolwatch.backends.multiprocess import service
    from poolwatch.core.sampler import sampler

    engine.dispose(close=False)  # SQLAlchemy's advice for a pool inherited across fork
    alive_after_fork = sampler.running()
    with engine.connect() as c:
        c.exec_driver_sql("SELECT 1")
        held = engine.connect()
        service.flush_now()
        conn.send(alive_after_fork)
        conn.recv()
    held.close()
    service.flush_now()
    conn.send("done")


def test_preload_each_child_counts_its_own_pool_once(
    mpdir: Path, postgres_url: str, make_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import poolwatch
    from poolwatch.backends.multiprocess import service

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(mpdir))
    name = "mp-pre-" + uuid.uuid4().hex[:8]
    engine = make_engine(postgres_url, pool_size=5, max_overflow=0)
    poolwatch.instrument(engine, name=name)
    parent_held = engine.connect()  # the parent's: never a child's
    parent_held.exec_driver_sql("SELECT 1")
    service.flush_now()
    children = []
    for _ in range(2):
        a, b = ctx.Pipe()
        p = ctx.Process(target=_forked_child_of_a_preloaded_parent, args=(engine, b), daemon=True)
        p.start()
        assert a.poll(60)
        assert a.recv() is True  # the sampler runs in the child
        children.append((p, a))
    try:
        m = collect(mpdir)
        used = {POOL: name, "db_client_connection_state": "used"}
        assert value(m, "db_client_connection_count", **used) == 1 + 2 * 2
        # The parent's one checkout and each child's two, each counted once.
        assert value(m, "db_client_connection_wait_time_seconds_count", **{POOL: name}) == 5
        assert value(m, "db_client_connection_max", **{POOL: name}) == 3 * 5
    finally:
        for p, a in children:
            a.send("release")
            assert a.poll(60) and a.recv() == "done"
            p.join(30)
        parent_held.close()
        service.flush_now()
    m = collect(mpdir)
    assert value(m, "db_client_connection_count", **used) == 0  # the parent's, now idle
    assert value(m, "db_client_connection_use_time_seconds_count", **{POOL: name}) == 5


def test_the_leak_watcher_runs_in_a_forked_worker(workers: Workers, mpdir: Path) -> None:
    name = workers.name
    p = workers.start(hold=1, leak_threshold=0.05)
    import time

    # Found by the child's own sampler thread; the gauge is written at its next pass.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = collect(mpdir)
        if value(m, "poolwatch_connections_leaked", **{POOL: name}):
            break
        time.sleep(0.05)
    assert value(m, "poolwatch_connections_leaked", **{POOL: name}) == 1
    assert value(m, "poolwatch_connection_leaks_total", **{POOL: name}) == 1
    workers.finish(p)


_records: list[logging.LogRecord] = []


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _records.append(record)


def _unaggregated_child(url: str, conn: Connection) -> None:
    import sqlalchemy

    import poolwatch

    # A second pool in the worker, after the fork: still the one warning.
    engine = sqlalchemy.create_engine(url)
    poolwatch.instrument(engine, name="mp-none-child-" + uuid.uuid4().hex[:8])
    conn.send([r.getMessage() for r in _records if r.levelno == logging.WARNING])


def test_a_fork_without_multiprocess_mode_warns_once_naming_what_to_do(
    postgres_url: str, make_engine: Any, registry: Any
) -> None:
    import poolwatch

    engine = make_engine(postgres_url)
    poolwatch.instrument(engine, name="mp-none-" + uuid.uuid4().hex[:8], registry=registry)
    handler = _Keep()
    logging.getLogger("poolwatch").addHandler(handler)
    try:
        a, b = ctx.Pipe()
        p = ctx.Process(target=_unaggregated_child, args=(postgres_url, b), daemon=True)
        p.start()
        assert a.poll(60)
        warnings = a.recv()
        p.join(30)
    finally:
        logging.getLogger("poolwatch").removeHandler(handler)
    assert len(warnings) == 1, warnings
    assert "poolwatch.gunicorn" in warnings[0] and "PROMETHEUS_MULTIPROC_DIR" in warnings[0]
    assert _records == []  # the parent, not a worker, said nothing


def _app_metrics_child(path: str, conn: Connection) -> None:
    """An application's own multiprocess metrics of every kind, beside poolwatch's."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    from prometheus_client import Counter, Gauge, Histogram, Summary, values

    values.ValueClass = values.MultiProcessValue()  # what poolwatch.gunicorn does
    Counter("app_requests", "Requests.", ["route"]).labels("/a\\b\"c\n").inc(3)
    Histogram("app_latency_seconds", "Latency.").observe(0.2)
    Summary("app_size_bytes", "Sizes.").observe(512)
    for mode in ("all", "liveall", "max", "min", "sum", "livesum", "mostrecent"):
        Gauge(f"app_gauge_{mode}", f"A {mode} gauge.", multiprocess_mode=mode).set(os.getpid() % 7)
    conn.send("ok")
    conn.recv()


def test_the_fast_exposition_is_prometheus_clients_over_the_same_files(
    workers: Workers, mpdir: Path
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
    from prometheus_client.parser import text_string_to_metric_families

    from poolwatch.exposition import generate_latest as pw_latest
    from poolwatch.exposition import service_registry

    procs = [workers.start(hold=i + 1, statements=i) for i in range(2)]
    apps = []
    for _ in range(2):
        a, b = ctx.Pipe()
        p = ctx.Process(target=_app_metrics_child, args=(str(mpdir), b), daemon=True)
        p.start()
        assert a.poll(60) and a.recv() == "ok"
        apps.append((p, a))
    try:
        workers.finish(procs[0])  # an archive too
        plain = CollectorRegistry()
        MultiProcessCollector(plain, str(mpdir))

        def parsed(text: str, parse: Any) -> dict[tuple[str, frozenset[Any]], float]:
            return {(s.name, frozenset(s.labels.items())): s.value
                    for f in parse(text) for s in f.samples}  # fmt: skip

        ours = service_registry(str(mpdir))
        text = pw_latest(ours).decode()  # sweeps the dead worker first
        theirs = parsed(generate_latest(plain).decode(), text_string_to_metric_families)
        assert parsed(text, text_string_to_metric_families) == theirs
        om = pw_latest(ours, openmetrics=True).decode()
        assert om.endswith("# EOF\n")
        assert {k: v for k, v in parsed(om, om_parse).items()} == theirs
        assert len(theirs) > 100
    finally:
        for p, a in apps:
            a.send("stop")
            p.join(10)


def test_the_multiprocess_families_are_the_catalogs(
    mpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy
    from prometheus_client.parser import text_string_to_metric_families

    import poolwatch
    from poolwatch.backends.multiprocess import service
    from poolwatch.core.catalog import CATALOG
    from poolwatch.exposition import generate_latest, service_registry

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(mpdir))
    engine = sqlalchemy.create_engine(f"sqlite:///{mpdir.parent / 'c.db'}")
    handle = poolwatch.instrument(engine, name="mp-catalog-" + uuid.uuid4().hex[:6],
                                  leak_threshold=60)  # fmt: skip
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        service.flush_now()
        text = generate_latest(service_registry(str(mpdir))).decode()
        families = {f.name: f.type for f in text_string_to_metric_families(text)}
    finally:
        handle.uninstrument()
        engine.dispose()
    expected = {m.prometheus: m.kind for m in CATALOG}
    # Every family is the catalog's, of the catalog's kind. Absent: gauges this pool has no value
    # for (no server limits on SQLite, no idle_min on QueuePool), and counters by error type
    # before the first error (a file holds series, not empty families: no series either way).
    assert {k: v for k, v in families.items()} == {
        k: v for k, v in expected.items() if k in families
    }
    absent = {m.key for m in CATALOG if m.prometheus not in families}
    assert absent == {"idle_min", "server_connections_max", "server_connections_limit_info",
                      "connection_errors", "invalidations"}  # fmt: skip


def _report_warnings(conn: Connection) -> None:
    conn.send([r.getMessage() for r in _records if r.levelno == logging.WARNING])


def test_a_meter_provider_inherited_across_fork_is_refused_with_a_reason(
    postgres_url: str, make_engine: Any
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import poolwatch

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    engine = make_engine(postgres_url)
    poolwatch.instrument(engine, name="mp-otel-" + uuid.uuid4().hex[:8], prometheus=False,
                         meter_provider=provider)  # fmt: skip
    handler = _Keep()
    logging.getLogger("poolwatch").addHandler(handler)
    try:
        a, b = ctx.Pipe()
        p = ctx.Process(target=_report_warnings, args=(b,), daemon=True)
        p.start()
        assert a.poll(60)
        warnings = a.recv()
        p.join(30)
    finally:
        logging.getLogger("poolwatch").removeHandler(handler)
        provider.shutdown()
    assert len(warnings) == 1, warnings
    assert "meter_provider" in warnings[0] and "service.instance.id" in warnings[0]
