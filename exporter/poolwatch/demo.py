"""``poolwatch demo``: an instrumented workload that runs a pool dry and recovers, in phases.

It uses a SQLite file database in a temporary folder unless ``--db`` names another, serves
``/metrics`` like an instrumented application would, and shows the pool live in the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine, event, text

__all__ = ["PHASES", "Phase", "main", "run"]

log = logging.getLogger("poolwatch.demo")


@dataclass(frozen=True)
class Phase:
    name: str
    share: float  # of one cycle's duration
    workers: int  # threads issuing short transactions
    hold: float  # seconds each transaction keeps its connection
    slow_workers: int = 0  # threads issuing slow statements
    leak: bool = False  # one connection checked out and not returned during the phase
    description: str = ""


PHASES: tuple[Phase, ...] = (
    Phase("steady", 0.2, 3, 0.02, description="normal traffic, the pool has room"),
    Phase(
        "burst", 0.2, 24, 0.5, description="a burst saturates the pool; callers wait and time out"
    ),
    Phase(
        "leak",
        0.2,
        3,
        0.02,
        leak=True,
        description="a connection is checked out and never returned",
    ),
    Phase(
        "slow queries", 0.2, 3, 0.02, slow_workers=3, description="slow statements hold connections"
    ),
    Phase("recovery", 0.2, 3, 0.02, description="back to normal; gauges return to idle"),
)
MAX_WORKERS = max(p.workers for p in PHASES)
POOL_SIZE, MAX_OVERFLOW, POOL_TIMEOUT = 5, 2, 1.0


def _sleep_sql(engine: Engine, seconds: float) -> Any:
    if engine.dialect.name == "postgresql":
        return text("SELECT pg_sleep(:s)").bindparams(s=seconds)
    if engine.dialect.name in ("mysql", "mariadb"):
        return text("SELECT SLEEP(:s)").bindparams(s=seconds)
    return text("SELECT demo_sleep(:s)").bindparams(s=seconds)


def _sqlite_sleep(seconds: float) -> int:
    time.sleep(seconds)
    return 0


def configure_tracing() -> Any:
    """When the environment asks for traces (``OTEL_EXPORTER_OTLP_ENDPOINT``, as in the compose
    stack), set up the OpenTelemetry SDK with an OTLP exporter, as ``opentelemetry-instrument``
    would; returns a tracer for the demo's "requests", or None."""
    from poolwatch.core.config import otel_traces_configured

    if not otel_traces_configured():
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("tracing requested by OTEL_* but poolwatch[otlp] is not installed")
        return None
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return trace.get_tracer("poolwatch.demo")


def make_engine(url: str) -> Engine:
    engine = create_engine(
        url, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, pool_timeout=POOL_TIMEOUT,
        pool_pre_ping=True,
    )  # fmt: skip
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _functions(dbapi_connection: Any, record: Any) -> None:
            # SQLite has no sleep(); the demo's "slow query" needs one. WAL lets readers and
            # the writer proceed together, as they would on a server database.
            dbapi_connection.create_function("demo_sleep", 1, _sqlite_sleep)
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA busy_timeout=5000")

    return engine


def create_schema(engine: Engine) -> None:
    with engine.begin() as c:
        c.execute(text("CREATE TABLE IF NOT EXISTS customers (id INTEGER PRIMARY KEY, name TEXT)"))
        c.execute(text(
            "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, customer_id INTEGER,"
            " total NUMERIC)"
        ))  # fmt: skip
        if c.execute(text("SELECT count(*) FROM customers")).scalar_one() == 0:
            c.execute(
                text("INSERT INTO customers (id, name) VALUES (:id, :name)"),
                [{"id": i, "name": f"customer {i}"} for i in range(1, 51)],
            )


class Workload:
    """Threads that follow the current phase; every loop is bounded by ``stop``."""

    def __init__(self, engine: Engine, tracer: Any = None) -> None:
        self.engine = engine
        self.tracer = tracer
        self.phase = PHASES[0]
        self.stop = threading.Event()
        self.errors: dict[str, int] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(MAX_WORKERS):
            self._threads.append(threading.Thread(target=self._worker, args=(i,), daemon=True))
        for i in range(max(p.slow_workers for p in PHASES)):
            self._threads.append(threading.Thread(target=self._slow, args=(i,), daemon=True))
        self._threads.append(threading.Thread(target=self._leaker, daemon=True))
        for t in self._threads:
            t.start()

    def set_phase(self, phase: Phase) -> None:
        self.phase = phase

    def _count(self, e: Exception) -> None:
        name = type(e).__name__
        self.errors[name] = self.errors.get(name, 0) + 1

    def _worker(self, i: int) -> None:
        rnd = random.Random(i)
        n = 0
        while not self.stop.is_set():
            phase = self.phase
            if i >= phase.workers:
                self.stop.wait(0.05)
                continue
            n += 1
            cid = rnd.randint(1, 50)
            span = (
                self.tracer.start_as_current_span("GET /customers/{id}/orders")
                if self.tracer is not None
                else contextlib.nullcontext()
            )
            try:
                # The connection is held for the phase's "hold" (a request doing other work
                # while it keeps its connection), reading only, so SQLite writers don't queue.
                with span, self.engine.connect() as c:
                    c.execute(text(
                        "SELECT o.id, o.total, c.name FROM orders o JOIN customers c"
                        " ON c.id = o.customer_id WHERE o.customer_id = :c"
                        " ORDER BY o.id DESC LIMIT 5"
                    ), {"c": cid})  # fmt: skip
                    self.stop.wait(phase.hold)
                if n % 5 == 0:
                    with self.engine.begin() as c:
                        c.execute(
                            text("INSERT INTO orders (customer_id, total) VALUES (:c, :t)"),
                            {"c": cid, "t": rnd.randint(1, 500)},
                        )
            except Exception as e:
                self._count(e)
            self.stop.wait(0.01 + rnd.random() * 0.03)

    def _leaker(self) -> None:
        """Checks a connection out when a leak phase starts and forgets it until it ends."""
        while not self.stop.is_set():
            if not self.phase.leak:
                self.stop.wait(0.05)
                continue
            try:
                conn = self.engine.connect()
            except Exception as e:
                self._count(e)
                continue
            try:
                conn.execute(text("SELECT count(*) FROM orders"))
                while self.phase.leak and not self.stop.wait(0.05):
                    pass
            finally:
                conn.close()

    def _slow(self, i: int) -> None:
        while not self.stop.is_set():
            if i >= self.phase.slow_workers:
                self.stop.wait(0.05)
                continue
            try:
                with self.engine.connect() as c:
                    c.execute(_sleep_sql(self.engine, 1.0))
            except Exception as e:
                self._count(e)

    def close(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(5)


class PoolView:
    """Reads the demo's own registry the way Prometheus would, for the terminal view."""

    def __init__(self, registry: CollectorRegistry, pool: str) -> None:
        self.registry = registry
        self.pool = pool
        self._last: tuple[float, dict[float, float]] | None = None

    def _value(self, name: str, **labels: str) -> float:
        v = self.registry.get_sample_value(
            name, {"db_client_connection_pool_name": self.pool, **labels}
        )
        return v or 0.0

    def _buckets(self) -> dict[float, float]:
        out: dict[float, float] = {}
        for metric in self.registry.collect():
            if metric.name != "db_client_connection_wait_time_seconds":
                continue
            for s in metric.samples:
                if (
                    s.name.endswith("_bucket")
                    and s.labels.get("db_client_connection_pool_name") == self.pool
                ):
                    out[float(s.labels["le"])] = s.value
        return out

    def wait_p99(self) -> float:
        """p99 of the waits since the previous call (as ``rate()`` over a short window)."""
        now = self._buckets()
        prev = self._last[1] if self._last else {}
        self._last = (time.monotonic(), now)
        delta = sorted((le, now[le] - prev.get(le, 0.0)) for le in now)
        total = delta[-1][1] if delta else 0.0
        if total <= 0:
            return 0.0
        rank, lower, below = 0.99 * total, 0.0, 0.0
        for le, count in delta:
            if count >= rank:
                if le == float("inf"):
                    return lower
                span = count - below
                return lower + (le - lower) * ((rank - below) / span if span else 1.0)
            lower, below = le, count
        return lower

    def row(self) -> dict[str, float]:
        return {
            "used": self._value("db_client_connection_count", db_client_connection_state="used"),
            "idle": self._value("db_client_connection_count", db_client_connection_state="idle"),
            "max": self._value("db_client_connection_max"),
            "waiting": self._value("db_client_connection_pending_requests"),
            "timeouts": self._value("db_client_connection_timeouts_total"),
            "leaked": self._value("poolwatch_connections_leaked"),
            "wait_p99": self.wait_p99(),
        }


def _cycles(duration: float) -> Iterator[tuple[float, Phase]]:
    """(phase end time, phase) forever; one cycle lasts ``duration`` (or 100 s when looping)."""
    cycle = duration if duration > 0 else 100.0
    start = time.monotonic()
    while True:
        for phase in PHASES:
            start += phase.share * cycle
            yield start, phase
        if duration > 0:
            return


def _render_plain(elapsed: float, total: float, phase: Phase, r: dict[str, float]) -> str:
    progress = f"{elapsed:5.1f}s" + (f"/{total:.0f}s" if total > 0 else "")
    return (
        f"[{progress}] {phase.name:<13} used {r['used']:.0f}/{r['max']:.0f} idle {r['idle']:.0f}"
        f" waiting {r['waiting']:.0f} wait p99 {r['wait_p99'] * 1000:.0f} ms"
        f" timeouts {r['timeouts']:.0f} leaked {r['leaked']:.0f}"
    )


def _render_rich(elapsed: float, total: float, phase: Phase, r: dict[str, float], url: str) -> Any:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    used, cmax = int(r["used"]), int(r["max"]) or 1
    bar = ProgressBar(
        total=cmax, completed=used, width=30, complete_style="red" if used >= cmax else "green"
    )
    table = Table(title=f"poolwatch demo — {url}", expand=False)
    for col in ("phase", "used / max", "", "idle", "waiting", "wait p99", "timeouts", "leaked"):
        table.add_column(col)
    table.add_row(
        Text(phase.name, style="bold"), f"{used} / {cmax}", bar, f"{r['idle']:.0f}",
        Text(f"{r['waiting']:.0f}", style="red" if r["waiting"] else ""),
        f"{r['wait_p99'] * 1000:.0f} ms", f"{r['timeouts']:.0f}", f"{r['leaked']:.0f}",
    )  # fmt: skip
    done = ProgressBar(total=total or 1, completed=min(elapsed, total) if total else 0, width=60)
    caption = Text(f"{phase.description}\n", style="italic")
    footer = Text(
        f"{elapsed:.0f}s"
        + (f" of {total:.0f}s" if total else " (Ctrl-C to stop)")
        + "  ·  scrape /metrics at the address above",
        style="dim",
    )
    return Group(table, caption, done, footer)


def run(
    db: str | None,
    *,
    duration: float,
    port: int,
    addr: str,
    tui: bool,
    out: Any = sys.stdout,
) -> int:
    import poolwatch

    tmp = None
    if db is None:
        tmp = tempfile.mkdtemp(prefix="poolwatch-demo-")
        db = f"sqlite:///{os.path.join(tmp, 'demo.db')}"
    registry = CollectorRegistry()
    tracer = configure_tracing()
    engine = make_engine(db)
    # The leak must be seen within its phase, however short a run the user asked for.
    leak_phase = next(p for p in PHASES if p.leak).share * (duration or 100.0)
    handle = poolwatch.instrument(
        engine, name="demo", registry=registry, port=port, addr=addr,
        leak_threshold=max(1.5, min(3.0, leak_phase / 3)),
        slow_query_threshold=0.5, leak_stacks=True,
        # Resolution around the demo's 1 s pool_timeout: a full wait plus a pre-ping lands just
        # above it, and a wide bucket there would make the p99 read as up to 2.5 s.
        pool_buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.05, 1.1,
                      1.25, 1.5, 2.0, 5.0, 10.0, 30.0),
    )  # fmt: skip
    try:
        create_schema(engine)
        workload = Workload(engine, tracer)
        view = PoolView(registry, handle.name)
        url = f"http://{addr}:{port}/metrics"
        print(f"poolwatch demo on {engine.url.render_as_string(hide_password=True)}; "
              f"metrics at {url}", file=out, flush=True)  # fmt: skip
        workload.start()
        started = time.monotonic()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        live = _live(tui, out)
        try:
            with live as update:
                for end, phase in _cycles(duration):
                    workload.set_phase(phase)
                    log.info("phase: %s — %s", phase.name, phase.description)
                    while not stop.is_set() and time.monotonic() < end:
                        elapsed = time.monotonic() - started
                        r = view.row()
                        if update is not None:
                            update(_render_rich(elapsed, duration, phase, r, url))
                        else:
                            print(_render_plain(elapsed, duration, phase, r), file=out, flush=True)
                        stop.wait(min(1.0, max(0.0, end - time.monotonic())))
                    if stop.is_set():
                        break
        except KeyboardInterrupt:
            pass
        finally:
            workload.close()
        r = view.row()
        print(
            f"done: {r['timeouts']:.0f} checkouts timed out; final used {r['used']:.0f},"
            f" waiting {r['waiting']:.0f}; workload errors {workload.errors or 'none'}",
            file=out, flush=True,
        )  # fmt: skip
        return 0
    finally:
        handle.uninstrument()
        engine.dispose()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _live(tui: bool, out: Any) -> Iterator[Any]:
    if tui and out.isatty():
        try:
            from rich.live import Live
        except ImportError:
            tui = False
        else:
            with Live(refresh_per_second=4, transient=False) as live:
                yield live.update
            return
    yield None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="database URL (default: a SQLite file in a temp folder)")
    parser.add_argument(
        "--duration", type=float, default=60.0,
        help="seconds for one pass through the phases; 0 loops until Ctrl-C (default: 60)",
    )  # fmt: skip
    parser.add_argument("--port", type=int, default=9464, help="metrics port (default: 9464)")
    parser.add_argument("--addr", default="127.0.0.1", help="metrics address (default: 127.0.0.1)")
    parser.add_argument("--no-tui", action="store_true", help="plain status lines, no live view")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not args.no_tui and sys.stdout.isatty():
        # The live view owns the terminal; poolwatch's own log lines would tear it.
        logging.getLogger().setLevel(logging.ERROR)
    if args.duration < 0:
        raise SystemExit("poolwatch demo: --duration accepts seconds >= 0 (0 = until Ctrl-C)")
    return run(args.db, duration=args.duration, port=args.port, addr=args.addr, tui=not args.no_tui)
