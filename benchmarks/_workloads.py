"""Workloads and configurations, as run inside a worker process (see ``_worker.py``).

A workload's ``setup(params)`` returns ``(engine, run)`` where ``run(n)`` performs ``n`` operations
(the loop lives inside ``run`` so no extra call per operation is timed). ``apply_config`` attaches
one configuration to the engine before the warm-up; ``evidence`` afterwards reports what the
configuration really recorded, so a benchmark that silently measured nothing is visible.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.pool import QueuePool

Run = Callable[[int], None]

_tmpdir: tempfile.TemporaryDirectory[str] | None = None


def sqlite_file_url() -> str:
    """A fresh SQLite database file (file databases use QueuePool, like the budget asks)."""
    global _tmpdir
    if _tmpdir is None:
        _tmpdir = tempfile.TemporaryDirectory(prefix="poolwatch-bench-")
    return f"sqlite:///{os.path.join(_tmpdir.name, 'bench.db')}"


# ---------------------------------------------------------------------------------------------
# workloads


def _connect_pass(params: dict[str, Any]) -> tuple[Engine, Run]:
    engine = create_engine(sqlite_file_url(), poolclass=QueuePool)

    def run(n: int) -> None:
        connect = engine.connect
        for _ in range(n):
            with connect():
                pass

    return engine, run


def _select1(engine: Engine) -> Run:
    # Written exactly as the budget states it: text() is built inside the loop, like an
    # application that does not hoist its statements.
    def run(n: int) -> None:
        connect = engine.connect
        for _ in range(n):
            with connect() as c:
                c.execute(text("SELECT 1"))

    return run


def _select1_sqlite(params: dict[str, Any]) -> tuple[Engine, Run]:
    engine = create_engine(sqlite_file_url(), poolclass=QueuePool)
    return engine, _select1(engine)


def _pg_engine(params: dict[str, Any], **kw: Any) -> Engine:
    # application_name lets the worker find its own server backends (to pin them, see
    # pin_server_backends); it is a connect argument, not a listener, so nothing is measured.
    return create_engine(params["url"], connect_args={"application_name": app_name()}, **kw)


def app_name() -> str:
    return f"poolwatch-bench-{os.getpid()}"


def pin_server_backends(params: dict[str, Any]) -> list[int]:
    """Pin this worker's PostgreSQL backends to ``params["server_cpu"]`` (a local server only).

    Called after the warm-up, when the pool has opened all its connections. Returns the pids
    pinned; an empty list if pinning is off, the server is remote, or we may not do it.
    """
    cpu = params.get("server_cpu")
    if cpu is None:
        return []
    import psycopg

    dsn = params["url"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app_name(),)
            )
        ]
    pinned = []
    for pid in pids:
        try:
            os.sched_setaffinity(pid, {int(cpu)})
            pinned.append(pid)
        except OSError:  # not our process / not permitted / server on another machine
            pass
    return pinned


def _select1_pg(params: dict[str, Any]) -> tuple[Engine, Run]:
    engine = _pg_engine(params, pool_size=5, max_overflow=0)
    return engine, _select1(engine)


def _contention_pg(params: dict[str, Any]) -> tuple[Engine, Run]:
    threads = int(params.get("threads", 32))
    engine = _pg_engine(
        params, pool_size=int(params.get("pool_size", 5)), max_overflow=0, pool_timeout=60
    )

    def worker(count: int, barrier: threading.Barrier) -> None:
        connect = engine.connect
        barrier.wait()
        for _ in range(count):
            with connect() as c:
                c.execute(text("SELECT 1"))

    return engine, _threaded(threads, worker)


def _threaded(threads: int, worker: Callable[[int, threading.Barrier], None]) -> Run:
    """A run of n operations spread over ``threads`` threads of ``worker(count, barrier)``, which
    waits on the barrier before its first: the clock covers start to last join (thread creation
    is a few hundred µs, the same for every configuration)."""

    def run(n: int) -> None:
        per = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
        barrier = threading.Barrier(threads + 1)
        ts = [threading.Thread(target=worker, args=(k, barrier)) for k in per]
        for t in ts:
            t.start()
        barrier.wait()
        for t in ts:
            t.join()

    return run


# psycopg_pool: the same workloads on a pool of its own (opened at the first run, after the
# configuration is attached, so OpenTelemetry's psycopg instrumentation sees every connect).


def _conninfo(params: dict[str, Any]) -> str:
    from sqlalchemy import make_url

    u = make_url(params["url"])
    parts = {"host": u.host, "port": u.port, "user": u.username, "password": u.password,
             "dbname": u.database, "application_name": app_name()}
    return " ".join(f"{k}={v}" for k, v in parts.items() if v)


def _pg_pool(params: dict[str, Any], size: int) -> Any:
    from psycopg_pool import ConnectionPool

    return ConnectionPool(_conninfo(params), min_size=size, max_size=size, timeout=60, open=False)


def _opened(pool: Any, run: Run) -> Run:
    def first(n: int) -> None:
        if pool.closed:
            pool.open(wait=True)
        run(n)

    return first


def _pgpool_connect_pass(params: dict[str, Any]) -> tuple[Any, Run]:
    pool = _pg_pool(params, 5)

    def run(n: int) -> None:
        connection = pool.connection
        for _ in range(n):
            with connection():
                pass

    return pool, _opened(pool, run)


def _pgpool_select1(params: dict[str, Any]) -> tuple[Any, Run]:
    pool = _pg_pool(params, 5)

    def run(n: int) -> None:
        connection = pool.connection
        for _ in range(n):
            with connection() as c:
                c.execute("SELECT 1")

    return pool, _opened(pool, run)


def _pgpool_contention(params: dict[str, Any]) -> tuple[Any, Run]:
    threads = int(params.get("threads", 32))
    pool = _pg_pool(params, int(params.get("pool_size", 5)))

    def worker(count: int, barrier: threading.Barrier) -> None:
        connection = pool.connection
        barrier.wait()
        for _ in range(count):
            with connection() as c:
                c.execute("SELECT 1")

    return pool, _opened(pool, _threaded(threads, worker))


def _pgpool_async_select1(params: dict[str, Any]) -> tuple[Any, Run]:
    """``async with pool.connection() as c: await c.execute("SELECT 1")``, one task, on one
    event loop kept for the life of the worker."""
    import asyncio

    from psycopg_pool import AsyncConnectionPool

    loop = asyncio.new_event_loop()
    pool = AsyncConnectionPool(_conninfo(params), min_size=5, max_size=5, timeout=60,
                               open=False)

    async def many(n: int) -> None:
        if pool.closed:
            await pool.open(wait=True)
        connection = pool.connection
        for _ in range(n):
            async with connection() as c:
                await c.execute("SELECT 1")

    def run(n: int) -> None:
        loop.run_until_complete(many(n))

    return pool, run


WORKLOADS: dict[str, Callable[[dict[str, Any]], tuple[Any, Run]]] = {
    "connect_pass": _connect_pass,
    "select1_sqlite": _select1_sqlite,
    "select1_pg": _select1_pg,
    "contention_pg": _contention_pg,
    "pgpool_connect_pass": _pgpool_connect_pass,
    "pgpool_select1": _pgpool_select1,
    "pgpool_contention": _pgpool_contention,
    "pgpool_async_select1": _pgpool_async_select1,
}


# ---------------------------------------------------------------------------------------------
# configurations


class Applied:
    """What a configuration attached, kept alive for the life of the worker."""

    def __init__(self) -> None:
        self.handle: Any = None
        self.registry: Any = None
        self.span_counter: Any = None
        self.calls = [0]


def counting_tracer_provider() -> tuple[Any, Any]:
    """An SDK TracerProvider with no exporter: one span processor that only counts ended spans.

    Spans are recorded (ALWAYS_ON sampling) and ended, exactly as with a real exporter behind a
    BatchSpanProcessor, minus the export; nothing accumulates in memory across millions of spans.
    """
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    class CountingSpanProcessor(SpanProcessor):
        def __init__(self) -> None:
            self.ended = 0

        def on_end(self, span: Any) -> None:
            self.ended += 1

    counter = CountingSpanProcessor()
    provider = TracerProvider()
    provider.add_span_processor(counter)
    return provider, counter


def apply_config(engine: Engine, config: str) -> Applied:
    a = Applied()
    if config in ("bare", "bare_aa"):
        return a
    if config == "bare_imported":
        # Everything poolwatch.instrument() would import, imported and nothing attached.
        import prometheus_client

        import poolwatch

        a.registry = prometheus_client.CollectorRegistry()
        return a
    if config in ("pw", "pw_py", "pw_trace", "pw_leak", "pw_pool", "pw_null", "pw_mp"):
        if config == "pw_mp":
            # This worker process's own directory: the files it writes are the only ones there.
            import atexit
            import shutil
            import tempfile

            mp_dir = tempfile.mkdtemp(prefix="pw-bench-mp-")
            atexit.register(shutil.rmtree, mp_dir, True)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = mp_dir
        if config == "pw_py":
            # Read once, when poolwatch.core.build is first imported (nothing imported it yet).
            os.environ["POOLWATCH_PURE_PYTHON"] = "1"
        from prometheus_client import CollectorRegistry

        import poolwatch

        a.registry = CollectorRegistry()
        kw: dict[str, Any] = {"registry": a.registry, "tracing": False}
        if config == "pw_trace":
            provider, a.span_counter = counting_tracer_provider()
            kw.update(tracing=True, tracer_provider=provider)
        elif config == "pw_leak":
            kw["leak_threshold"] = 1.0
        elif config == "pw_pool":
            kw["statement_metrics"] = False
        elif config == "pw_null":
            kw.update(statement_metrics=False, prometheus=False)
        a.handle = poolwatch.instrument(engine, **kw)
        return a
    if config == "otel" and not isinstance(engine, Engine):
        # A psycopg_pool pool: OpenTelemetry's psycopg instrumentation (it wraps psycopg's
        # connect, so every connection the pool opens after this is traced).
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

        provider, a.span_counter = counting_tracer_provider()
        PsycopgInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
        a.handle = PsycopgInstrumentor()
        return a
    if config == "otel":
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        provider, a.span_counter = counting_tracer_provider()
        # skip_dep_check: the instrumentation declares sqlalchemy<2.1.
        a.handle = SQLAlchemyInstrumentor().instrument(
            engine=engine, tracer_provider=provider, skip_dep_check=True
        )
        return a
    if config == "noop_cursor":
        calls = a.calls

        def on_cursor(
            conn: Any, cursor: Any, statement: Any, params: Any, context: Any, executemany: Any
        ) -> None:
            calls[0] += 1

        event.listen(engine, "before_cursor_execute", on_cursor)
        event.listen(engine, "after_cursor_execute", on_cursor)
        return a
    if config == "noop_do_execute":
        calls = a.calls

        def on_do_execute(cursor: Any, statement: Any, parameters: Any, context: Any) -> None:
            calls[0] += 1

        event.listen(engine, "do_execute", on_do_execute)
        return a
    if config == "noop_dialect_wrap":
        # poolwatch's own seam with nothing in it: the engine's dialect instance gets a
        # pass-through do_execute / do_execute_no_params wrapper (no event listener at all).
        calls = a.calls
        dialect = engine.dialect
        for method in ("do_execute", "do_execute_no_params"):
            original = getattr(dialect, method)

            def wrapper(
                cursor: Any, statement: Any, *args: Any, _o: Any = original, **kw: Any
            ) -> Any:
                calls[0] += 1
                return _o(cursor, statement, *args, **kw)

            setattr(dialect, method, wrapper)
        return a
    if config == "noop_pool_wrap":
        # poolwatch's pool seams with nothing in them: pass-through wrappers on the pool
        # instance's connect() and _return_conn(), as poolwatch installs its own.
        calls = a.calls
        pool: Any = engine.pool
        connect, return_conn = pool.connect, pool._return_conn

        def pool_connect() -> Any:
            calls[0] += 1
            return connect()

        def pool_return_conn(record: Any) -> None:
            return_conn(record)

        pool.connect, pool._return_conn = pool_connect, pool_return_conn
        return a
    raise ValueError(f"unknown configuration {config!r}")


def evidence(a: Applied, config: str) -> dict[str, Any]:
    """Proof the configuration did its work (metric observations, spans, listener calls)."""
    out: dict[str, Any] = {}
    if config == "pw_mp":
        from poolwatch.backends.multiprocess import service
        from poolwatch.exposition import service_registry

        service.flush_now()
        a.registry = service_registry()
    if a.registry is not None:
        families = list(a.registry.collect())
        observations = 0
        for fam in families:
            if fam.type == "histogram":
                observations += int(sum(s.value for s in fam.samples if s.name.endswith("_count")))
        out["metric_families"] = len(families)
        out["histogram_observations"] = observations
    if a.span_counter is not None:
        out["spans"] = a.span_counter.ended
    if config.startswith("pw"):
        from poolwatch.core import build as wrappers

        out["hotpath"] = "compiled" if wrappers.COMPILED else "interpreted"
    if config.startswith("noop_"):
        out["listener_calls"] = a.calls[0]
    return out
