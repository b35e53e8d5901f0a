"""The demo's run: ``/metrics`` served, the database and tables set up, the workload instrumented
and driven through its phases with the view updated, and everything taken down again."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from .database import DemoError, DemoTables, make_engine
from .render import LogPanel, render_plain, render_rich
from .signals import shielded, stop_signals
from .view import PoolView
from .workload import PHASES, Workload, cycles

__all__ = ["DEFAULT_PORT", "configure_tracing", "run", "serve_metrics"]

log = logging.getLogger("poolwatch.demo")

DEFAULT_PORT = 9464


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
        with stop_signals():
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
                    with shielded():
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
                for end, phase in cycles(duration):
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
            with shielded():
                workload.close()
        r = view.row()
        errors = ", ".join(f"{k} {v}" for k, v in sorted(workload.errors.items())) or "none"
        print(
            f"done: {r.timeouts} checkouts timed out; final used {r.used}, waiting {r.waiting};"
            f" workload errors: {errors}",
            file=out, flush=True,
        )  # fmt: skip
    finally:
        with shielded():
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
