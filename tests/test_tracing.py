"""Traces against the real PostgreSQL: pool-wait spans, statement spans, what they may carry."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine, event, text

import poolwatch
from poolwatch.backends.otel.tracing import POOL_NAME_ATTRIBUTE, WAIT_SPAN_NAME, WAIT_TIME_ATTRIBUTE
from poolwatch.core.config import resolve_settings, tracing_enabled

HOLD = 0.3


class Traces:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("app")

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def waits(self) -> list[ReadableSpan]:
        return self.named(WAIT_SPAN_NAME)

    def statements(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.kind is SpanKind.CLIENT]


@pytest.fixture
def traces() -> Iterator[Traces]:
    t = Traces()
    yield t
    t.provider.shutdown()


def unique() -> str:
    return "pw-trace-" + uuid.uuid4().hex[:8]


def traced(engine: Engine, traces: Traces, registry: CollectorRegistry, **settings: Any) -> Any:
    """``poolwatch.instrument`` with tracing on, into the test's tracer provider and registry."""
    return poolwatch.instrument(
        engine, name=unique(), registry=registry, tracing=True, tracer_provider=traces.provider,
        **settings,
    )  # fmt: skip


def warm(engine: Engine) -> None:
    """Open the pool's connection outside any request, so later waits are pure contention."""
    with engine.connect() as c:
        c.execute(text("SELECT 1"))


@contextmanager
def held(engine: Engine, seconds: float = HOLD) -> Iterator[None]:
    """Another thread holds a connection for ``seconds`` (from the moment it has it)."""
    ready = threading.Event()

    def hold() -> None:
        with engine.connect():
            ready.set()
            time.sleep(seconds)

    t = threading.Thread(target=hold)
    t.start()
    assert ready.wait(10)
    try:
        yield
    finally:
        t.join(10)


def test_request_trace_shows_pool_wait_and_statement(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    engine = engines(pool_size=1, max_overflow=0)
    handle = traced(engine, traces, registry)
    warm(engine)
    traces.exporter.clear()
    with held(engine), traces.tracer.start_as_current_span("GET /orders") as request:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    req = request.get_span_context()
    (wait,) = [s for s in traces.waits() if s.parent is not None]
    assert wait.parent is not None and wait.parent.span_id == req.span_id
    assert wait.context.trace_id == req.trace_id
    assert wait.kind is SpanKind.INTERNAL
    assert wait.attributes is not None
    assert wait.attributes[POOL_NAME_ATTRIBUTE] == handle.name
    assert wait.attributes["db.system.name"] == "postgresql"
    waited = wait.attributes[WAIT_TIME_ATTRIBUTE]
    assert isinstance(waited, float) and HOLD / 2 < waited < HOLD + 5
    # Started at the real start of the checkout (perf_counter converted to epoch), not at its end.
    assert wait.start_time is not None and wait.end_time is not None
    assert abs((wait.end_time - wait.start_time) / 1e9 - waited) < 0.005
    req_span = traces.named("GET /orders")[0]
    assert req_span.start_time is not None and req_span.end_time is not None
    assert req_span.start_time <= wait.start_time < wait.end_time <= req_span.end_time
    assert wait.status.status_code is StatusCode.UNSET

    (stmt,) = traces.statements()
    assert stmt.parent is not None and stmt.parent.span_id == req.span_id
    assert stmt.context.trace_id == req.trace_id
    assert stmt.attributes is not None
    assert stmt.attributes.get("db.statement", stmt.attributes.get("db.query.text")) == "SELECT ?"
    assert wait.end_time <= (stmt.start_time or 0)


def test_checkouts_faster_than_the_threshold_have_no_span(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    engine = engines(pool_size=1, max_overflow=0)
    traced(engine, traces, registry, wait_span_threshold=0.1)
    warm(engine)
    traces.exporter.clear()
    with traces.tracer.start_as_current_span("request"):
        for _ in range(5):
            with engine.connect() as c:
                c.execute(text("SELECT 1"))
    assert traces.waits() == []
    assert len(traces.statements()) == 5


def test_zero_threshold_spans_every_checkout(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    engine = engines(pool_size=1, max_overflow=0)
    poolwatch.instrument(
        engine, name=unique(), registry=registry, tracer_provider=traces.provider,
        wait_span_threshold=0,
    )  # fmt: skip
    warm(engine)
    traces.exporter.clear()
    for _ in range(3):
        with engine.connect():
            pass
    assert len(traces.waits()) == 3


def test_timed_out_checkout_is_an_error_span_and_the_app_gets_timeout_error(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    engine = engines(pool_size=1, max_overflow=0, pool_timeout=0.2)
    traced(engine, traces, registry)
    warm(engine)
    traces.exporter.clear()
    with held(engine, 1.0), traces.tracer.start_as_current_span("request") as request:
        with pytest.raises(sqlalchemy.exc.TimeoutError) as raised:
            engine.connect()
    assert "QueuePool limit" in str(raised.value)  # SQLAlchemy's own exception, untouched
    (wait,) = [s for s in traces.waits() if s.parent is not None]
    assert wait.parent is not None
    assert wait.parent.span_id == request.get_span_context().span_id
    assert wait.status.status_code is StatusCode.ERROR
    assert wait.attributes is not None and wait.attributes.get("error.type")
    assert wait.start_time is not None and wait.end_time is not None
    assert (wait.end_time - wait.start_time) / 1e9 >= 0.19
    (exc_event,) = [e for e in wait.events if e.name == "exception"]
    assert exc_event.attributes is not None
    assert dict(exc_event.attributes) == {"exception.type": "sqlalchemy.exc.TimeoutError"}
    assert wait.attributes["error.type"] == "TimeoutError"
    assert wait.status.description == "connection pool timeout"


def test_failed_connect_is_an_error_span_without_the_driver_message(
    traces: Traces, registry: CollectorRegistry
) -> None:
    from tests.support.services import free_port

    engine = create_engine(
        f"postgresql+psycopg://secretuser@127.0.0.1:{free_port()}/test",
        connect_args={"connect_timeout": 2},
    )
    traced(engine, traces, registry)
    try:
        with traces.tracer.start_as_current_span("request"):
            with pytest.raises(sqlalchemy.exc.OperationalError):
                engine.connect()
    finally:
        poolwatch.uninstrument(engine)
        engine.dispose()
    (wait,) = traces.waits()
    assert wait.status.status_code is StatusCode.ERROR
    assert "secretuser" not in _everything(wait)


def test_failed_checkout_span_has_the_error_type_and_no_message_or_stacktrace(
    postgres_url: str, traces: Traces, registry: CollectorRegistry
) -> None:
    role = "pw_trace_no_such_role_9d2b"
    url = sqlalchemy.engine.make_url(postgres_url).set(username=role)
    engine = create_engine(url)
    traced(engine, traces, registry)
    try:
        with traces.tracer.start_as_current_span("request"):
            with pytest.raises(sqlalchemy.exc.OperationalError) as raised:
                engine.connect()
    finally:
        poolwatch.uninstrument(engine)
        engine.dispose()
    assert f'role "{role}" does not exist' in str(raised.value)  # the app still gets it all
    (wait,) = traces.waits()
    assert wait.status.status_code is StatusCode.ERROR
    assert not wait.status.description
    assert (wait.attributes or {})["error.type"] == "authentication_failed"
    assert [(e.name, dict(e.attributes or {})) for e in wait.events] == [
        ("exception", {"exception.type": "psycopg.OperationalError"})
    ]
    dump = _everything(wait)
    for secret in (role, "does not exist", "FATAL", "Traceback"):
        assert secret not in dump


def test_failed_statement_span_has_the_error_type_and_no_message(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    engine = engines()
    traced(engine, traces, registry)
    with engine.connect() as c:
        with pytest.raises(sqlalchemy.exc.DataError) as raised:
            c.execute(text("SELECT 'value-secret-77'::int"))
    assert "value-secret-77" in str(raised.value)
    (span,) = traces.statements()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "data_exception"
    assert "value-secret-77" not in _everything(span)


def test_exceptions_recorded_on_a_statement_span_keep_only_their_type() -> None:
    from poolwatch.backends.otel.tracing import RedactingTracer

    traces = Traces()
    tracer = RedactingTracer(traces.provider.get_tracer("x"), "postgresql")
    span = tracer.start_span("SELECT db")
    try:
        raise ValueError('FATAL: role "bob" does not exist')
    except ValueError as e:
        span.record_exception(e, {"exception.message": "kept?"})
    span.end()
    (done,) = traces.spans()
    assert [dict(e.attributes or {}) for e in done.events] == [{"exception.type": "ValueError"}]


def _everything(span: ReadableSpan) -> str:
    """Every string a span exports: name, attributes, status, events."""
    parts = [span.name, repr(dict(span.attributes or {})), repr(span.status.description)]
    for e in span.events:
        parts.append(e.name)
        parts.append(repr(dict(e.attributes or {})))
    return "\n".join(parts)


def test_statement_spans_carry_no_literals_parameters_or_user(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    engine = engines()
    traced(engine, traces, registry)
    with traces.tracer.start_as_current_span("request"), engine.connect() as c:
        c.execute(
            text("SELECT 'literal-secret', 987654 /* note-secret */ WHERE :p = 'bound-secret'"),
            {"p": "bound-secret"},
        )
        c.execute(text("SELECT'glued-secret'"))
        with pytest.raises(sqlalchemy.exc.DataError):
            c.execute(text("SELECT 'error-secret'::int"))
    stmts = traces.statements()
    assert len(stmts) == 3
    for span in stmts:
        dump = _everything(span)
        for secret in ("secret", "987654"):
            assert secret not in dump, (secret, dump)
        # The URL's user ("postgres") would be db.user in the old conventions.
        assert "db.user" not in (span.attributes or {})
    first = stmts[0].attributes or {}
    assert first.get("db.statement") == "SELECT ?, ? WHERE %(p)s = ?"
    assert stmts[1].name.split()[0] == "SELECT"
    failed = stmts[2]
    assert failed.status.status_code is StatusCode.ERROR
    assert not failed.status.description


def test_statement_spans_are_lean_no_sqlcommenter(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    engine = engines()
    traced(engine, traces, registry)
    seen: list[str] = []

    @event.listens_for(engine, "after_cursor_execute")
    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    with traces.tracer.start_as_current_span("request"), engine.connect() as c:
        c.execute(text("SELECT 1"))
    assert seen == ["SELECT 1"]  # the SQL sent to the server carries no traceparent comment
    event.remove(engine, "after_cursor_execute", capture)


def test_uninstrument_removes_the_statement_and_wait_spans(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    engine = engines(pool_size=1, max_overflow=0)

    def listeners() -> list[list[Any]]:
        d = engine.dispatch
        return [
            list(d.before_cursor_execute), list(d.after_cursor_execute),
            list(engine.dialect.dispatch.handle_error),
        ]  # fmt: skip

    before = listeners()
    handle = traced(engine, traces, registry)
    warm(engine)
    assert len(traces.statements()) == 1
    # EngineTracer's listeners run from poolwatch's do_execute seam, not as SQLAlchemy events.
    assert listeners() == before
    assert "do_execute" in vars(engine.dialect)
    handle.uninstrument()
    assert "do_execute" not in vars(engine.dialect)
    traces.exporter.clear()
    with held(engine), traces.tracer.start_as_current_span("request"):
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    assert [s.name for s in traces.spans()] == ["request"]
    assert listeners() == before


def test_no_process_wide_patching(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    create_before = sqlalchemy.create_engine
    connect_before = sqlalchemy.engine.Engine.connect
    engine = engines()
    traced(engine, traces, registry)
    assert sqlalchemy.create_engine is create_before
    assert sqlalchemy.engine.Engine.connect is connect_before
    other = engines()  # not instrumented: no statement spans
    with traces.tracer.start_as_current_span("request"), other.connect() as c:
        c.execute(text("SELECT 1"))
    assert traces.statements() == []


def test_an_engine_already_traced_by_the_instrumentor_gets_no_second_statement_span(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpUpDownCounter

    engine = engines()
    EngineTracer(traces.tracer, engine, NoOpUpDownCounter("x"))
    try:
        poolwatch.instrument(
            engine, name=unique(), registry=registry, tracing=True,
            tracer_provider=traces.provider,
        )  # fmt: skip
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        assert len([s for s in traces.statements() if s.name.startswith("SELECT")]) == 1
    finally:
        EngineTracer.remove_all_event_listeners()


def test_sampled_out_requests_record_nothing(
    engines: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = engines()
    poolwatch.instrument(
        engine, name=unique(), registry=registry, tracing=True, tracer_provider=provider,
        wait_span_threshold=0,
    )  # fmt: skip
    with engine.connect() as c:
        c.execute(text("SELECT 1"))
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


# -- switching tracing on ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_SERVICE_NAME": "shop"}, False),
    ],
)
def test_auto_follows_the_standard_otel_environment(env: dict[str, str], expected: bool) -> None:
    assert tracing_enabled("auto", None, env) is expected


def test_explicit_setting_and_tracer_provider() -> None:
    provider = object()
    assert tracing_enabled("auto", provider, {}) is True
    assert tracing_enabled(False, provider, {"OTEL_TRACES_EXPORTER": "otlp"}) is False
    assert tracing_enabled(True, None, {}) is True
    assert resolve_settings({}, {}).tracing == "auto"
    assert resolve_settings({}, {"POOLWATCH_TRACING": "AUTO"}).tracing == "auto"
    assert resolve_settings({}, {"POOLWATCH_TRACING": "on"}).tracing is True
    assert resolve_settings({"tracing": False}, {"POOLWATCH_TRACING": "true"}).tracing is False
    with pytest.raises(ValueError, match="POOLWATCH_TRACING='sometimes'; tracing accepts auto"):
        resolve_settings({}, {"POOLWATCH_TRACING": "sometimes"})


def test_passing_a_tracer_provider_turns_tracing_on(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    engine = engines()
    poolwatch.instrument(engine, name=unique(), registry=registry, tracer_provider=traces.provider)
    with traces.tracer.start_as_current_span("request"), engine.connect() as c:
        c.execute(text("SELECT 1"))
    assert len(traces.statements()) == 1


def test_environment_turns_tracing_on_with_the_global_provider(
    engines: Callable[..., Engine], registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engines()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    handle = poolwatch.instrument(engine, name=unique(), registry=registry)
    assert handle.telemetry.tracing is not None
    handle.uninstrument()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    handle = poolwatch.instrument(engine, name=unique(), registry=registry)
    assert handle.telemetry.tracing is None


# -- the seam: EngineTracer's listeners run from do_execute -----------------------------------------
def test_statement_spans_keep_sqlalchemy_off_its_event_path(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    engine = engines()
    traced(engine, traces, registry)
    with traces.tracer.start_as_current_span("request"), engine.connect() as c:
        c.execute(text("SELECT 1"))
        c.execute(text("SELECT :x"), {"x": 2})
        # Any cursor-event listener would set these and slow every statement.
        assert not engine._has_events
        assert not c._has_events
    stmts = traces.statements()
    assert [s.name for s in stmts] == ["SELECT test", "SELECT test"]
    assert [(s.attributes or {}).get("db.statement") for s in stmts] == ["SELECT ?", "SELECT %(x)s"]


def test_executemany_gets_one_span_per_cursor_call(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    engine = engines()
    table = "pw_trace_many_" + uuid.uuid4().hex[:8]
    traced(engine, traces, registry)
    with engine.begin() as c:
        c.execute(text(f"CREATE TEMP TABLE {table} (id int, v text)"))
        traces.exporter.clear()
        c.execute(
            text(f"INSERT INTO {table} VALUES (:id, :v)"), [{"id": i, "v": "x"} for i in range(50)]
        )
        assert c.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 50
    names = [s.name for s in traces.statements()]
    assert names == ["INSERT test", "SELECT test"]  # one cursor call for the 50 rows


def test_a_statement_without_parameters_is_traced_and_timed(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    # The no_parameters execution option sends the statement to the dialect's
    # do_execute_no_params, whose signature the traced path adapts.
    engine = engines()
    warm(engine)
    handle = traced(engine, traces, registry)
    traces.exporter.clear()
    with engine.connect() as c:
        c = c.execution_options(no_parameters=True)
        assert c.exec_driver_sql("SELECT 41 + 1").scalar() == 42
    assert [s.name for s in traces.statements()] == ["SELECT test"]
    assert registry.get_sample_value(
        "db_client_operation_duration_seconds_count",
        {"db_client_connection_pool_name": handle.name, "db_system_name": "postgresql",
         "db_operation_name": "SELECT", "db_query_summary": "SELECT", "error_type": ""},
    ) == 1  # fmt: skip


def test_a_failing_span_processor_never_fails_the_query(
    engines: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    from opentelemetry.sdk.trace import SpanProcessor

    class Broken(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            raise RuntimeError("exporter misconfigured")

    provider = TracerProvider()
    provider.add_span_processor(Broken())
    engine = engines()
    warm(engine)  # the dialect's first-connect statements are not part of this test
    handle = poolwatch.instrument(
        engine, name=unique(), registry=registry, tracing=True, tracer_provider=provider
    )
    with engine.connect() as c:
        assert c.execute(text("SELECT 41 + 1")).scalar() == 42
        assert c.execute(text("SELECT 1")).scalar() == 1
    assert handle.state.errors.counts["tracing"] == 2
    # The statement was still timed.
    labels = {
        "db_client_connection_pool_name": handle.name, "db_system_name": "postgresql",
        "db_operation_name": "SELECT", "db_query_summary": "SELECT", "error_type": "",
    }  # fmt: skip
    assert registry.get_sample_value("db_client_operation_duration_seconds_count", labels) == 2
    provider.shutdown()


def test_failed_statement_span_from_the_seam_is_an_error_and_ended_once(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    engine = engines()
    traced(engine, traces, registry)
    with engine.connect() as c:
        with pytest.raises(sqlalchemy.exc.ProgrammingError):
            c.execute(text("SELECT * FROM pw_no_such_table"))
    (span,) = traces.statements()
    assert span.status.status_code is StatusCode.ERROR
    assert span.end_time is not None


def test_without_statement_metrics_spans_fall_back_to_cursor_events(
    engines: Callable[..., Engine], traces: Traces, registry: CollectorRegistry
) -> None:
    engine = engines()
    handle = traced(engine, traces, registry, statement_metrics=False)
    with engine.connect() as c:
        c.execute(text("SELECT 1"))
    assert [s.name for s in traces.statements()] == ["SELECT test"]
    assert "do_execute" not in vars(engine.dialect)
    assert len(engine.dispatch.before_cursor_execute) == 1
    handle.uninstrument()
    assert len(engine.dispatch.before_cursor_execute) == 0
