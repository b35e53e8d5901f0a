"""The OpenTelemetry metrics path: same names and labels as the Prometheus path, and OTLP export."""

from __future__ import annotations

import gzip
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

import poolwatch
from poolwatch.core.settings import DEFAULT_OPERATION_BUCKETS, DEFAULT_POOL_BUCKETS
from tests.support.services import free_port

POOL = "db_client_connection_pool_name"

# The contract's required names (Prometheus spelling) and their labels beyond the pool name.
CONTRACT: dict[str, set[str]] = {
    "db_client_connection_count": {"db_client_connection_state"},
    "db_client_connection_max": set(),
    "db_client_connection_idle_max": set(),
    "db_client_connection_pending_requests": set(),
    "db_client_connection_timeouts_total": set(),
    "db_client_connection_wait_time_seconds_bucket": {"le"},
    "db_client_connection_use_time_seconds_bucket": {"le"},
    "db_client_connection_create_time_seconds_bucket": {"le"},
    "db_client_operation_duration_seconds_bucket": {
        "le", "db_system_name", "db_operation_name", "db_query_summary", "error_type",
    },
}  # fmt: skip
# db_client_connection_idle_min: QueuePool has no such setting, so neither path exports it.

SEMCONV_INSTRUMENTS = {
    "db.client.connection.count",
    "db.client.connection.max",
    "db.client.connection.idle.max",
    "db.client.connection.pending_requests",
    "db.client.connection.timeouts",
    "db.client.connection.wait_time",
    "db.client.connection.use_time",
    "db.client.connection.create_time",
    "db.client.operation.duration",
}


def unique() -> str:
    return "pw-otel-" + uuid.uuid4().hex[:8]


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def series(registry: CollectorRegistry, *, drop_scope: bool = False) -> Series:
    """Every sample of the classic text exposition, keyed by name and non-empty labels
    (Prometheus treats an empty label as absent). ``_created`` samples are prometheus_client's
    own and are left out; ``drop_scope`` removes the OTel exporter's scope labels and
    ``target_info``."""
    out: Series = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            if drop_scope and s.name == "target_info":
                continue
            labels = frozenset(
                (k, v)
                for k, v in s.labels.items()
                if v != "" and not (drop_scope and k.startswith("otel_scope_"))
            )
            out[(s.name, labels)] = s.value
    return out


def label_names(data: Series) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name, labels in data:
        out.setdefault(name, set()).update(k for k, _ in labels)
    return out


def comparable(data: Series) -> Series:
    """Series as both paths must agree on them. Sums are float additions of the same
    observations (rounded). A histogram with no observation yet is left out: prometheus_client
    exports it with zeros as soon as its label child exists, while an OpenTelemetry histogram
    has no series before its first observation (both mean "nothing observed" to PromQL)."""
    empty = {
        (name.removesuffix("_count"), labels)
        for (name, labels), v in data.items()
        if name.endswith("_seconds_count") and v == 0
    }
    out: Series = {}
    for (name, labels), v in data.items():
        base = name.rsplit("_", 1)[0]
        if (base, labels - {("le", dict(labels).get("le", ""))}) in empty:
            continue
        out[(name, labels)] = round(v, 9) if name.endswith("_sum") else v
    return out


@pytest.fixture
def both_paths() -> Iterator[tuple[MeterProvider, CollectorRegistry, CollectorRegistry]]:
    """A MeterProvider exported to Prometheus twice: with the exporter's defaults, and bare."""
    default_reg, bare_reg = CollectorRegistry(), CollectorRegistry()
    provider = MeterProvider(
        metric_readers=[
            PrometheusMetricReader(registry=default_reg),
            PrometheusMetricReader(
                disable_target_info=True, scope_info_enabled=False, registry=bare_reg
            ),
        ]
    )
    yield provider, default_reg, bare_reg
    provider.shutdown()


def exercise(engine: Engine) -> None:
    """Statements, a failed statement, a timeout and an invalidation on a 1-connection pool."""
    with engine.connect() as c:
        c.execute(text("SELECT 1"))
        with pytest.raises(sqlalchemy.exc.ProgrammingError):
            c.execute(text("SELECT * FROM pw_no_such_table"))
    ready = threading.Event()

    def holder() -> None:
        with engine.connect():
            ready.set()
            time.sleep(0.5)

    t = threading.Thread(target=holder)
    t.start()
    assert ready.wait(10)
    with pytest.raises(sqlalchemy.exc.TimeoutError):
        engine.connect()
    t.join(10)
    with engine.connect() as c:
        c.invalidate()


def test_otel_names_and_labels_equal_the_prometheus_path(
    engines: Callable[..., Engine],
    both_paths: tuple[MeterProvider, CollectorRegistry, CollectorRegistry],
    registry: CollectorRegistry,
) -> None:
    provider, default_reg, bare_reg = both_paths
    engine = engines(pool_size=1, max_overflow=0, pool_timeout=0.2)
    name = unique()
    poolwatch.instrument(
        engine, name=name, registry=registry, meter_provider=provider, labels={"role": "primary"}
    )
    refused = engines(
        f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test",
        connect_args={"connect_timeout": 2},
    )
    poolwatch.instrument(
        refused, name=unique(), registry=registry, meter_provider=provider,
        labels={"role": "primary"},
    )  # fmt: skip
    exercise(engine)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        refused.connect()

    prom = series(registry)
    bare = series(bare_reg)
    default = series(default_reg)

    # Every contract name comes out of the OTel path with the contract's labels.
    names = label_names(bare)
    for metric, extra in CONTRACT.items():
        assert metric in names, metric
        assert names[metric] == {POOL, "role", *extra}, metric
    assert "poolwatch_connection_errors_total" in names
    assert "poolwatch_connection_invalidations_total" in names

    # Same names, same label names, same values: one dashboard serves both paths.
    assert label_names(bare) == label_names(prom)
    assert comparable(bare) == comparable(prom)
    assert len(comparable(bare)) > 100

    # With the exporter's defaults the only differences are its own additions: the
    # otel_scope_{name,version,schema_url} labels on every series, and target_info.
    assert comparable(series(default_reg, drop_scope=True)) == comparable(prom)
    scoped = label_names(default)
    # (otel_scope_schema_url is exported empty, which Prometheus treats as absent.)
    assert {"otel_scope_name", "otel_scope_version"} <= scoped["db_client_connection_count"]
    assert "target_info" in scoped
    assert (
        default[
            (
                "db_client_connection_timeouts_total",
                frozenset(
                    {
                        (POOL, name),
                        ("role", "primary"),
                        ("otel_scope_name", "poolwatch"),
                        ("otel_scope_version", poolwatch.__version__),
                    }
                ),
            )
        ]
        == 1
    )


def test_histogram_buckets_follow_the_settings(
    engines: Callable[..., Engine],
    both_paths: tuple[MeterProvider, CollectorRegistry, CollectorRegistry],
    registry: CollectorRegistry,
) -> None:
    provider, _, bare_reg = both_paths
    engine = engines()
    poolwatch.instrument(engine, name=unique(), registry=registry, meter_provider=provider)
    with engine.connect() as c:
        c.execute(text("SELECT 1"))
    data = series(bare_reg)

    def bounds(metric: str) -> list[float]:
        les = {dict(labels)["le"] for name, labels in data if name == metric + "_bucket"}
        return sorted(float(le) for le in les if le != "+Inf")

    assert bounds("db_client_connection_wait_time_seconds") == list(DEFAULT_POOL_BUCKETS)
    assert bounds("db_client_connection_use_time_seconds") == list(DEFAULT_POOL_BUCKETS)
    assert bounds("db_client_operation_duration_seconds") == list(DEFAULT_OPERATION_BUCKETS)


def test_gauges_read_the_pool_and_stop_after_uninstrument(
    engines: Callable[..., Engine],
    both_paths: tuple[MeterProvider, CollectorRegistry, CollectorRegistry],
) -> None:
    provider, _, bare_reg = both_paths
    engine = engines(pool_size=2, max_overflow=3)
    name = unique()
    handle = poolwatch.instrument(engine, name=name, prometheus=False, meter_provider=provider)

    def value(metric: str, **labels: str) -> float | None:
        return bare_reg.get_sample_value(metric, {POOL: name, **labels})

    with engine.connect():
        assert value("db_client_connection_count", db_client_connection_state="used") == 1
        assert value("db_client_connection_count", db_client_connection_state="idle") == 0
    assert value("db_client_connection_count", db_client_connection_state="used") == 0
    assert value("db_client_connection_count", db_client_connection_state="idle") == 1
    assert value("db_client_connection_max") == 5
    assert value("db_client_connection_idle_max") == 2
    assert value("db_client_connection_pending_requests") == 0
    handle.uninstrument()
    assert value("db_client_connection_count", db_client_connection_state="used") is None
    assert value("db_client_connection_max") is None


# -- OTLP ---------------------------------------------------------------------------------------
class Receiver:
    """A minimal OTLP/HTTP receiver on a free loopback port: keeps every request body."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {"/v1/metrics": [], "/v1/traces": []}
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                bodies.setdefault(self.path, []).append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_otlp_http_export_of_metrics_and_traces(
    engines: Callable[..., Engine], receiver: Receiver
) -> None:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.url + "/v1/traces"))
    )
    meter_provider = MeterProvider(
        metric_readers=[
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=receiver.url + "/v1/metrics"),
                export_interval_millis=3_600_000,
            )
        ]
    )
    engine = engines(pool_size=1, max_overflow=0)
    name = unique()
    try:
        poolwatch.instrument(
            engine, name=name, prometheus=False, tracing=True, tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )  # fmt: skip
        with engine.connect():
            pass  # open the connection outside the request
        ready = threading.Event()

        def holder() -> None:
            with engine.connect():
                ready.set()
                time.sleep(0.2)

        t = threading.Thread(target=holder)
        t.start()
        assert ready.wait(10)
        tracer = tracer_provider.get_tracer("app")
        with tracer.start_as_current_span("request") as request, engine.connect() as c:
            c.execute(text("SELECT 1"))
        t.join(10)
        assert meter_provider.force_flush()
        assert tracer_provider.force_flush()
    finally:
        poolwatch.uninstrument(engine)
        meter_provider.shutdown()
        tracer_provider.shutdown()

    request_ctx = request.get_span_context()
    # Metrics: the semantic conventions' instruments, with the pool attribute.
    metrics: dict[str, Any] = {}
    for body in receiver.bodies["/v1/metrics"]:
        req = ExportMetricsServiceRequest()
        req.ParseFromString(body)
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                assert sm.scope.name == "poolwatch"
                for m in sm.metrics:
                    metrics.setdefault(m.name, m)
    assert SEMCONV_INSTRUMENTS <= set(metrics)
    wait = metrics["db.client.connection.wait_time"]
    assert wait.unit == "s"
    (point,) = [
        p
        for p in wait.histogram.data_points
        if {a.key: a.value.string_value for a in p.attributes}.get(
            "db.client.connection.pool.name"
        )
        == name
    ]
    assert list(point.explicit_bounds) == list(DEFAULT_POOL_BUCKETS)
    assert point.count == 3
    # The SDK's trace-based exemplar filter attaches the request's trace to the contended wait.
    assert request_ctx.trace_id.to_bytes(16, "big") in {e.trace_id for e in point.exemplars}

    # Traces: the request, its pool wait and its statement.
    spans = []
    for body in receiver.bodies["/v1/traces"]:
        req_t = ExportTraceServiceRequest()
        req_t.ParseFromString(body)
        for rs in req_t.resource_spans:
            for ss in rs.scope_spans:
                spans += [(ss.scope.name, s) for s in ss.spans]
    request_id = request_ctx.span_id.to_bytes(8, "big")
    waits = [s for scope, s in spans if s.name == "db.client.connection.wait"]
    (child_wait,) = [s for s in waits if s.parent_span_id == request_id]
    attrs = {a.key: a.value for a in child_wait.attributes}
    assert attrs["db.client.connection.pool.name"].string_value == name
    assert attrs["poolwatch.connection.wait_time"].double_value >= 0.1
    assert (child_wait.end_time_unix_nano - child_wait.start_time_unix_nano) / 1e9 >= 0.1
    statements = [
        (scope, s)
        for scope, s in spans
        if s.parent_span_id == request_id and s.name != "db.client.connection.wait"
    ]
    assert [(scope, s.name.split()[0]) for scope, s in statements] == [
        ("opentelemetry.instrumentation.sqlalchemy", "SELECT")
    ]
