"""``poolwatch demo``: an instrumented workload that runs a pool dry and recovers, in phases.

It uses a SQLite file database in a temporary folder unless ``--db`` names another (SQLite,
PostgreSQL, MySQL/MariaDB), serves ``/metrics`` like an instrumented application would, and shows
the pool live in the terminal. In the user's database it creates two tables of its own, named
``poolwatch_demo_<run id>_*`` so that concurrent demos (the compose stack runs two) never share
them, and drops them when it ends, however it ends short of SIGKILL.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import (
    Column,
    Engine,
    ForeignKey,
    Identity,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.schema import DropTable
from sqlalchemy.sql import Executable

from poolwatch.tools import names as n
from poolwatch.tools.scrape import Read, Sample, bucket_quantile, registry_read
from poolwatch.tools.rows import pool_rows

__all__ = [
    "DEFAULT_PORT",
    "PHASES",
    "WAIT_WINDOW",
    "DemoError",
    "DemoTables",
    "LogPanel",
    "Phase",
    "PoolRow",
    "PoolView",
    "main",
    "render_plain",
    "render_rich",
    "run",
]

log = logging.getLogger("poolwatch.demo")

DEFAULT_PORT = 9464
WAIT_WINDOW = 5.0  # seconds of checkout waits the view's p99 covers
TABLE_PREFIX = "poolwatch_demo_"
DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb")


class DemoError(Exception):
    """A reason the demo cannot run, said to the user in one line (exit status 2)."""


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
CUSTOMERS = 50


# ---------------------------------------------------------------------------------------------
# The database: the demo's own tables, in whatever database the URL names


class DemoTables:
    """The demo's two tables, uniquely named for this run. SQLAlchemy writes each dialect's DDL
    (an identity column on PostgreSQL, AUTO_INCREMENT on MySQL, a rowid alias on SQLite)."""

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id or uuid.uuid4().hex[:8]
        prefix = f"{TABLE_PREFIX}{self.run_id}_"
        self.metadata = MetaData()
        self.customers = Table(
            f"{prefix}customers",
            self.metadata,
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column("name", String(100), nullable=False),
        )
        self.orders = Table(
            f"{prefix}orders",
            self.metadata,
            Column("id", Integer, Identity(), primary_key=True),
            Column("customer_id", Integer, ForeignKey(self.customers.c.id), nullable=False),
            Column("total", Numeric(10, 2), nullable=False),
        )
        self.created: list[Table] = []

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.metadata.sorted_tables]

    def create(self, engine: Engine) -> None:
        # One table at a time, never checkfirst: a table of that name that is not ours is an
        # error, and only what this run created is dropped (MySQL's DDL is not transactional).
        for table in self.metadata.sorted_tables:
            with engine.begin() as c:
                table.create(c, checkfirst=False)
            self.created.append(table)
        with engine.begin() as c:
            c.execute(
                insert(self.customers),
                [{"id": i, "name": f"customer {i}"} for i in range(1, CUSTOMERS + 1)],
            )

    def drop(self, engine: Engine) -> None:
        while self.created:
            table = self.created[-1]
            with engine.begin() as c:
                # IF EXISTS in the statement, not a has_table() query first: the server decides.
                c.execute(DropTable(table, if_exists=True))
            self.created.pop()


def _sleep_sql(engine: Engine, seconds: float) -> Executable:
    if engine.dialect.name == "postgresql":
        return select(func.pg_sleep(seconds))
    if engine.dialect.name in ("mysql", "mariadb"):
        return select(func.sleep(seconds))
    return select(func.demo_sleep(seconds))


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
    accepts = "--db accepts a SQLite, PostgreSQL or MySQL/MariaDB URL"
    try:
        dialect = make_url(url).get_backend_name()
    except ArgumentError:
        raise DemoError(f"{accepts}, e.g. postgresql+psycopg://user@host/db") from None
    if dialect not in DIALECTS:
        raise DemoError(f"{accepts}, not {dialect!r}")
    try:
        engine = create_engine(
            url, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, pool_timeout=POOL_TIMEOUT,
            pool_pre_ping=True,
        )  # fmt: skip
    except ImportError as e:
        raise DemoError(f"the driver for {dialect} is not installed ({e})") from None
    except ArgumentError as e:
        raise DemoError(f"{accepts}: {e}") from None
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _functions(dbapi_connection: Any, record: Any) -> None:
            # SQLite has no sleep(); the demo's "slow query" needs one. WAL lets readers and
            # the writer proceed together, as they would on a server database.
            dbapi_connection.create_function("demo_sleep", 1, _sqlite_sleep)
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA busy_timeout=5000")

    return engine


# ---------------------------------------------------------------------------------------------
# The workload


class Workload:
    """Threads that follow the current phase; every loop is bounded by ``stop``."""

    def __init__(self, engine: Engine, tables: DemoTables, tracer: Any = None) -> None:
        self.engine = engine
        self.tables = tables
        self.tracer = tracer
        self.phase = PHASES[0]
        self.stop = threading.Event()
        self.errors: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        o, c = tables.orders, tables.customers
        self._recent = (
            select(o.c.id, o.c.total, c.c.name)
            .join_from(o, c, c.c.id == o.c.customer_id)
            .order_by(o.c.id.desc())
            .limit(5)
        )

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
        orders = self.tables.orders
        n = 0
        while not self.stop.is_set():
            phase = self.phase
            if i >= phase.workers:
                self.stop.wait(0.05)
                continue
            n += 1
            cid = rnd.randint(1, CUSTOMERS)
            span = (
                self.tracer.start_as_current_span("GET /customers/{id}/orders")
                if self.tracer is not None
                else contextlib.nullcontext()
            )
            try:
                # The connection is held for the phase's "hold" (a request doing other work
                # while it keeps its connection), reading only, so SQLite writers don't queue.
                with span, self.engine.connect() as c:
                    c.execute(self._recent.where(orders.c.customer_id == cid)).all()
                    self.stop.wait(phase.hold)
                if n % 5 == 0:
                    with self.engine.begin() as c:
                        c.execute(insert(orders).values(customer_id=cid, total=rnd.randint(1, 500)))
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
                conn.execute(select(func.count()).select_from(self.tables.orders)).scalar_one()
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
        """Stops every thread; they return their connections within a slow statement's second."""
        self.stop.set()
        deadline = time.monotonic() + 10
        for t in self._threads:
            if t.ident is not None:  # a Ctrl-C can land while start() is still starting them
                t.join(max(0.0, deadline - time.monotonic()))


# ---------------------------------------------------------------------------------------------
# The view: a row of numbers read from the demo's own registry, and its two renderings


@dataclass(frozen=True)
class PoolRow:
    """One pool's numbers, as the view shows them."""

    used: int
    idle: int
    max: int
    waiting: int
    timeouts: int
    leaked: int
    wait_p99: float  # seconds, over the last ``window`` seconds
    window: float


class PoolView:
    """The demo's pool as ``poolwatch top`` reads it (its row model, over reads of the demo's own
    registry), with the checkout waits' p99 over the last ``window`` seconds."""

    def __init__(self, registry: CollectorRegistry, pool: str, window: float = WAIT_WINDOW) -> None:
        self.registry = registry
        self.pool = pool
        self.window = window
        # Reads of the registry, oldest first; the first is before the workload starts.
        self._reads: deque[Read] = deque([registry_read(registry)])

    def row(self) -> PoolRow:
        now = registry_read(self.registry)
        reads = self._reads
        while len(reads) > 1 and reads[1].at <= now.at - self.window:
            reads.popleft()
        before = reads[0]
        reads.append(now)
        top = next((r for r in pool_rows([now], [before]) if r.pool == self.pool), None)
        if top is None:  # not registered (yet, or any more)
            return PoolRow(0, 0, 0, 0, 0, 0, 0.0, self.window)
        return PoolRow(
            used=int(top.used),
            idle=int(top.idle),
            max=int(top.max or 0),
            waiting=int(top.waiting),
            timeouts=int(_value(now, n.CONNECTION_TIMEOUTS, self.pool)),
            leaked=int(top.leaked or 0),
            wait_p99=self._wait_p99(now, before),
            window=self.window,
        )

    def _wait_p99(self, now: Read, before: Read) -> float:
        """``histogram_quantile(0.99, rate(..._bucket[window]))``, as Prometheus would read it
        (since the start while the demo is younger than the window)."""
        name = n.WAIT_TIME + "_bucket"
        counts = {float(s.labels[n.LE]): s.value for s in _samples(now, name, self.pool)}
        for s in _samples(before, name, self.pool):
            counts[float(s.labels[n.LE])] -= s.value
        return bucket_quantile(0.99, counts) or 0.0


def _samples(read: Read, name: str, pool: str) -> list[Sample]:
    return [s for s in read.samples if s.name == name and s.labels.get(n.POOL) == pool]


def _value(read: Read, name: str, pool: str) -> float:
    return sum(s.value for s in _samples(read, name, pool))


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


PHASE_WIDTH = max(len(p.name) for p in PHASES)  # the plain line pads the phase to it


def _p99_label(window: float) -> str:
    return f"wait p99 ({window:g} s)"


def render_plain(elapsed: float, total: float, phase: Phase, r: PoolRow) -> str:
    """One status line; the same width whatever the phase."""
    progress = f"{elapsed:5.1f}s" + (f"/{total:.0f}s" if total > 0 else "")
    return (
        f"[{progress}] {phase.name:<{PHASE_WIDTH}} used {r.used}/{r.max} idle {r.idle}"
        f" waiting {r.waiting:>2} {_p99_label(r.window)} {r.wait_p99 * 1000:5.0f} ms"
        f" timeouts {r.timeouts} leaked {r.leaked}"
    )


class LogPanel(logging.Handler):
    """Keeps the last log records for the live view, which shows them beneath its table instead
    of letting them scroll through it. A record of several lines (the leak report and where the
    connection was checked out) keeps its first line and its innermost frame; a record that
    repeats the one before but for its measurements (floats) is counted, not repeated."""

    def __init__(self, lines: int = 6) -> None:
        super().__init__(logging.INFO)
        self.lines = lines
        # (what makes a repeat, style, lines, times seen)
        self._entries: deque[tuple[object, str, list[str], int]] = deque(maxlen=lines)
        self._lock_entries = threading.Lock()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        first, *rest = text.splitlines() or [""]
        style = (
            "red"
            if record.levelno >= logging.ERROR
            else "yellow"
            if record.levelno >= logging.WARNING
            else "dim"
        )
        # "most recent call last": the last frame (two lines, file and source) says who did it.
        tail = [f"    {line.strip()}" for line in rest[-2:]]
        args = record.args if isinstance(record.args, tuple) else ()
        key = (record.name, record.levelno, record.msg, [a for a in args if type(a) is not float])
        with self._lock_entries:
            seen = 1
            if self._entries and self._entries[-1][0] == key:
                seen += self._entries.pop()[3]
            self._entries.append((key, style, [first, *tail], seen))

    def rendered(self) -> list[tuple[str, str]]:
        """(style, line) pairs, exactly ``lines`` of them (blank ones first)."""
        with self._lock_entries:
            entries = list(self._entries)
        out: list[tuple[str, str]] = []
        for _, style, (first, *tail), seen in entries:
            out.append((style, f"(×{seen}) {first}" if seen > 1 else first))
            out.extend((style, line) for line in tail)
        out = out[-self.lines :]
        return [("", "")] * (self.lines - len(out)) + out


# Fixed widths, so that the view keeps its width whatever the phase and the numbers, within the
# 80 columns of a default terminal.
COLUMNS: tuple[tuple[str, int], ...] = (
    ("used/max", 8), ("", 10), ("idle", 4), ("waiting", 7),
    ("wait p99", len(_p99_label(WAIT_WINDOW))), ("timeouts", 8), ("leaked", 6),
)  # fmt: skip
# Each column's width, its padding of one on either side, and the borders around and between.
VIEW_WIDTH = sum(w for _, w in COLUMNS) + 3 * len(COLUMNS) + 1


def pool_table(r: PoolRow) -> Any:
    """The pool's numbers as a one-row table of fixed column widths.

    The numbers are ``poolwatch top``'s (PoolView reads them with its row model); its
    ``render_table`` is not used here because its twelve columns take their width from their
    content (past 80 columns, and the statements column wraps), and it shows a p95 without
    its window. A renderer of top's with fixed widths and a chosen set of columns would
    replace this function and nothing else."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    cmax = r.max or 1
    bar = ProgressBar(
        total=cmax, completed=r.used, width=COLUMNS[1][1],
        complete_style="red" if r.used >= cmax else "green",
    )  # fmt: skip
    table = Table(expand=False)
    for i, (col, width) in enumerate(COLUMNS):
        header = _p99_label(r.window) if col == "wait p99" else col
        table.add_column(header, width=width, no_wrap=True, justify="left" if i < 2 else "right")
    table.add_row(
        f"{r.used}/{cmax}", bar, str(r.idle),
        Text(str(r.waiting), style="red" if r.waiting else ""),
        f"{r.wait_p99 * 1000:.0f} ms", str(r.timeouts), str(r.leaked),
    )  # fmt: skip
    return table


def render_rich(
    elapsed: float,
    total: float,
    phase: Phase,
    r: PoolRow,
    title: str,
    panel: LogPanel | None = None,
) -> Any:
    """The live view: the title's lines, the phase, the pool's row, the run's progress, what
    "wait p99" covers and, beneath, the latest log records in a panel of fixed height; every
    line at most VIEW_WIDTH wide, whatever it shows."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    def line(text: str | Text, style: str = "") -> Text:
        t = Text(text, style=style) if isinstance(text, str) else text
        t.no_wrap, t.overflow = True, "ellipsis"
        return t

    number = PHASES.index(phase) + 1 if phase in PHASES else 0
    heading = Text.assemble(
        (f"phase {number}/{len(PHASES)}  ", "dim"), (phase.name, "bold"), " — ",
        (phase.description, "italic"),
    )  # fmt: skip
    done = ProgressBar(
        total=total or 1, completed=min(elapsed, total) if total else 0, width=VIEW_WIDTH
    )
    # A grid, one row each: a progress bar ends no line of its own.
    lines = Table.grid()
    for i, text in enumerate(title.splitlines()):
        lines.add_row(line(text, "bold" if i == 0 else "dim"))
    lines.add_row(line(heading))
    lines.add_row(pool_table(r))
    lines.add_row(done)
    lines.add_row(
        line(f"{elapsed:.0f}s" + (f" of {total:.0f}s" if total else " (Ctrl-C to stop)"), "dim")
    )
    lines.add_row(
        line(
            f"{_p99_label(r.window)}: the 99th percentile of checkout waits over the last"
            f" {r.window:g} s",
            "dim",
        )
    )
    parts: list[Any] = [lines]
    if panel is not None:
        body = Text(no_wrap=True, overflow="ellipsis")
        for i, (style, text) in enumerate(panel.rendered()):
            body.append(("\n" if i else "") + text, style=style)
        parts.append(Panel(body, title="log", title_align="left", width=VIEW_WIDTH))
    return Group(*parts)


# ---------------------------------------------------------------------------------------------
# The run


def serve_metrics(
    addr: str, port: int | None, registry: CollectorRegistry
) -> tuple[ThreadingHTTPServer, str | None]:
    """Serve ``/metrics`` on ``port``, or on DEFAULT_PORT when no port was asked for and on a
    free one if that is taken (the returned note says so). A port that was asked for and is
    taken is a DemoError: a demo whose metrics are another process's would mislead."""
    from poolwatch.backends.prometheus.exposition import serve

    try:
        return serve(addr, DEFAULT_PORT if port is None else port, registry), None
    except OSError as e:
        if port is not None or e.errno != errno.EADDRINUSE:
            raise DemoError(
                f"cannot serve metrics on {addr}:{DEFAULT_PORT if port is None else port} "
                f"({e.strerror or e}); choose another --port"
                + (", or leave --port out to use a free one" if port is not None else "")
            ) from None
    server = serve(addr, 0, registry)
    return server, f"port {DEFAULT_PORT} is taken; serving metrics on a free port instead"


# SIGHUP: the terminal closed. Windows has neither it nor a SIGTERM one can handle this way.
_STOPS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def _handling(signals: tuple[int, ...], handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for these signals while inside; only the main thread may set one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _stop_signals() -> contextlib.AbstractContextManager[None]:
    """SIGTERM and SIGHUP end the demo as Ctrl-C does, so that its tables are dropped."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return _handling(_STOPS, handler)


def _shielded() -> contextlib.AbstractContextManager[None]:
    """Cleanup that a second Ctrl-C (or SIGTERM) must not cut short: the tables get dropped."""

    def handler(signum: int, frame: Any) -> None:
        print("poolwatch demo: cleaning up (the workload, the tables), one moment", file=sys.stderr)

    return _handling((signal.SIGINT, *_STOPS), handler)


def run(
    db: str | None,
    *,
    duration: float,
    port: int | None,
    addr: str,
    tui: bool,
    out: Any = sys.stdout,
) -> int:
    """Run the demo; 0 when it ran and cleaned up, 1 when its tables could not be dropped.
    Raises DemoError for what stops it from starting (the port, the URL, the database)."""
    tmp = None
    if db is None:
        tmp = tempfile.mkdtemp(prefix="poolwatch-demo-")
        db = f"sqlite:///{os.path.join(tmp, 'demo.db')}"
    registry = CollectorRegistry()
    status = 0
    try:
        with _stop_signals():
            server, note = serve_metrics(addr, port, registry)
            try:
                engine = make_engine(db)
                shown = engine.url.render_as_string(hide_password=True)
                tables = DemoTables()
                try:
                    try:
                        tables.create(engine)
                    except SQLAlchemyError as e:
                        raise DemoError(
                            f"cannot create the demo's tables in {shown}: {_one_line(e)}"
                        ) from None
                    url = f"http://{addr}:{server.server_address[1]}/metrics"
                    if note:
                        print(f"poolwatch demo: {note}", file=out, flush=True)
                    print(
                        f"poolwatch demo on {shown} (tables {', '.join(tables.names)}, dropped at"
                        f" exit); metrics at {url}", file=out, flush=True,
                    )  # fmt: skip
                    _run_workload(engine, tables, registry, duration, tui, out, url, shown)
                finally:
                    with _shielded():
                        status = _drop(tables, engine, shown)
            finally:
                server.shutdown()
                server.server_close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return status


def _one_line(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    message = str(orig if orig is not None else e).strip().splitlines()
    return f"{type(orig or e).__name__}: {message[0] if message else ''}"


def _drop(tables: DemoTables, engine: Engine, shown: str) -> int:
    # The workload has stopped and returned its connections; any left are the pool's idle ones.
    engine.dispose()
    try:
        tables.drop(engine)
    except SQLAlchemyError as e:
        left = ", ".join(t.name for t in tables.created)
        print(
            f"poolwatch demo: could not drop the demo's tables {left} in {shown}: {_one_line(e)};"
            " drop them by hand", file=sys.stderr, flush=True,
        )  # fmt: skip
        return 1
    finally:
        engine.dispose()
    return 0


def _run_workload(
    engine: Engine,
    tables: DemoTables,
    registry: CollectorRegistry,
    duration: float,
    tui: bool,
    out: Any,
    url: str,
    shown: str,
) -> None:
    import poolwatch

    tracer = configure_tracing()
    # The leak must be seen within its phase, however short a run the user asked for.
    leak_phase = next(p for p in PHASES if p.leak).share * (duration or 100.0)
    try:
        handle = poolwatch.instrument(
            # port=None: run() serves the registry, whatever POOLWATCH_PORT says.
            engine, name="demo", registry=registry, port=None,
            leak_threshold=max(1.5, min(3.0, leak_phase / 3)),
            slow_query_threshold=0.5, leak_stacks=True,
            # Resolution around the demo's 1 s pool_timeout: a full wait plus a pre-ping lands
            # just above it, and a wide bucket there would make the p99 read as up to 2.5 s.
            pool_buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.05,
                          1.1, 1.25, 1.5, 2.0, 5.0, 10.0, 30.0),
        )  # fmt: skip
    except (TypeError, ValueError) as e:  # a POOLWATCH_* variable the settings refuse
        raise DemoError(str(e)) from None
    workload = Workload(engine, tables, tracer)
    try:
        view = PoolView(registry, handle.name)
        started = time.monotonic()
        title = f"poolwatch demo — metrics at {url}\n{shown}"
        try:
            workload.start()
            with _live(tui, out) as live:
                panel = live[1] if live else None
                for end, phase in _cycles(duration):
                    workload.set_phase(phase)
                    log.info("phase: %s — %s", phase.name, phase.description)
                    while time.monotonic() < end:
                        elapsed = time.monotonic() - started
                        r = view.row()
                        if live is not None:
                            live[0](render_rich(elapsed, duration, phase, r, title, panel))
                        else:
                            print(render_plain(elapsed, duration, phase, r), file=out, flush=True)
                        tick = 0.5 if live is not None else 1.0
                        time.sleep(min(tick, max(0.0, end - time.monotonic())))
        except KeyboardInterrupt:
            pass
        finally:
            with _shielded():
                workload.close()
        r = view.row()
        errors = ", ".join(f"{k} {v}" for k, v in sorted(workload.errors.items())) or "none"
        print(
            f"done: {r.timeouts} checkouts timed out; final used {r.used}, waiting {r.waiting};"
            f" workload errors: {errors}",
            file=out, flush=True,
        )  # fmt: skip
    finally:
        with _shielded():
            workload.close()
            handle.uninstrument()


@contextlib.contextmanager
def _live(tui: bool, out: Any) -> Iterator[tuple[Callable[[Any], None], LogPanel] | None]:
    """The rich live view when asked for and on a terminal, with poolwatch's log records routed
    into its panel for as long as it is shown; else None (plain lines, records as they come)."""
    if not (tui and out.isatty()):
        yield None
        return
    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError:
        yield None
        return
    panel = LogPanel()
    root = logging.getLogger()
    streams = [h for h in root.handlers if isinstance(h, logging.StreamHandler)]
    for h in streams:
        root.removeHandler(h)
    root.addHandler(panel)
    try:
        with Live(console=Console(file=out), refresh_per_second=4, transient=False) as live:
            yield live.update, panel
    finally:
        root.removeHandler(panel)
        for h in streams:
            root.addHandler(h)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", help="database URL: SQLite, PostgreSQL or MySQL/MariaDB (default: a SQLite file "
        "in a temp folder); the demo's tables are created there and dropped at exit",
    )  # fmt: skip
    parser.add_argument(
        "--duration", type=float, default=60.0,
        help="seconds for one pass through the phases; 0 loops until Ctrl-C (default: 60)",
    )  # fmt: skip
    parser.add_argument(
        "--port", type=int, default=None,
        help=f"metrics port, refused if taken; 0 for a free one (default: {DEFAULT_PORT}, or a "
        f"free one if {DEFAULT_PORT} is taken)",
    )  # fmt: skip
    parser.add_argument("--addr", default="127.0.0.1", help="metrics address (default: 127.0.0.1)")
    parser.add_argument("--no-tui", action="store_true", help="plain status lines, no live view")


def main(args: argparse.Namespace) -> int:
    if args.duration < 0:
        raise SystemExit("poolwatch demo: --duration accepts seconds >= 0 (0 = until Ctrl-C)")
    if args.port is not None and not 0 <= args.port < 65536:
        raise SystemExit("poolwatch demo: --port accepts 0-65535 (0: a free port)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return run(
            args.db, duration=args.duration, port=args.port, addr=args.addr, tui=not args.no_tui
        )
    except DemoError as e:
        print(f"poolwatch demo: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:  # before the workload started; whatever was made is gone
        return 130
