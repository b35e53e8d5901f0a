"""Exemplars: histogram observations made inside a sampled span carry its trace id."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import Engine, text

import poolwatch
from poolwatch.backends.otel.tracing import current_exemplar

WAIT = "db_client_connection_wait_time_seconds"
OPERATION = "db_client_operation_duration_seconds"


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    p = TracerProvider()
    yield p
    p.shutdown()


def bucket_samples(registry: CollectorRegistry, family: str, pool: str) -> list[Sample]:
    """The pool's ``_bucket`` samples of ``family``, parsed back from the OpenMetrics text."""
    text_ = openmetrics.generate_latest(registry).decode()
    out: list[Sample] = []
    for fam in text_string_to_metric_families(text_):
        if fam.name == family:
            out += [
                s
                for s in fam.samples
                if s.name.endswith("_bucket")
                and s.labels.get("db_client_connection_pool_name") == pool
            ]
    return out


def exemplar_trace_ids(samples: list[Sample]) -> set[str]:
    return {s.exemplar.labels["trace_id"] for s in samples if s.exemplar is not None}


def contended_request(engine: Engine, tracer: Tracer, hold: float = 0.2) -> str:
    """One request that waits ``hold`` s for the pool's only connection, then runs a statement;
    returns the request's trace id."""
    ready = threading.Event()

    def holder() -> None:
        with engine.connect():
            ready.set()
            time.sleep(hold)

    t = threading.Thread(target=holder)
    t.start()
    assert ready.wait(10)
    with tracer.start_as_current_span("request") as span, engine.connect() as c:
        c.execute(text("SELECT 1"))
    t.join(10)
    return f"{span.get_span_context().trace_id:032x}"


def test_wait_and_operation_observations_carry_the_trace_id(
    engines: Callable[..., Engine], provider: TracerProvider, registry: CollectorRegistry
) -> None:
    engine = engines(pool_size=1, max_overflow=0)
    name = "pw-ex-" + uuid.uuid4().hex[:8]
    poolwatch.instrument(
        engine, name=name, registry=registry, tracing=True, tracer_provider=provider
    )
    trace_id = contended_request(engine, provider.get_tracer("app"))

    waits = bucket_samples(registry, WAIT, name)
    ops = bucket_samples(registry, OPERATION, name)
    assert trace_id in exemplar_trace_ids(waits)
    assert trace_id in exemplar_trace_ids(ops)
    (wait_ex,) = [s for s in waits if s.exemplar and s.exemplar.labels["trace_id"] == trace_id]
    assert wait_ex.exemplar is not None
    assert set(wait_ex.exemplar.labels) == {"trace_id", "span_id"}
    assert len(wait_ex.exemplar.labels["span_id"]) == 16
    assert wait_ex.exemplar.value >= 0.1  # the contended wait, in the bucket it fell into
    # The classic text format (what Prometheus scrapes without OpenMetrics) is unchanged.
    assert "trace_id" not in generate_latest(registry).decode()


def test_no_exemplar_outside_a_span_or_when_sampled_out(
    engines: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    sampled_out = TracerProvider(sampler=ALWAYS_OFF)
    engine = engines()
    name = "pw-ex-" + uuid.uuid4().hex[:8]
    poolwatch.instrument(
        engine, name=name, registry=registry, tracing=True, tracer_provider=sampled_out
    )
    with engine.connect() as c:
        c.execute(text("SELECT 1"))
    with sampled_out.get_tracer("app").start_as_current_span("request"), engine.connect() as c:
        c.execute(text("SELECT 1"))
    assert exemplar_trace_ids(bucket_samples(registry, WAIT, name)) == set()
    assert exemplar_trace_ids(bucket_samples(registry, OPERATION, name)) == set()
    sampled_out.shutdown()


def test_exemplars_can_be_turned_off(
    engines: Callable[..., Engine], provider: TracerProvider, registry: CollectorRegistry
) -> None:
    engine = engines(pool_size=1, max_overflow=0)
    name = "pw-ex-" + uuid.uuid4().hex[:8]
    poolwatch.instrument(
        engine, name=name, registry=registry, tracing=True, tracer_provider=provider,
        exemplars=False,
    )  # fmt: skip
    contended_request(engine, provider.get_tracer("app"), hold=0.05)
    assert exemplar_trace_ids(bucket_samples(registry, WAIT, name)) == set()
    assert exemplar_trace_ids(bucket_samples(registry, OPERATION, name)) == set()


def test_current_exemplar(provider: TracerProvider) -> None:
    assert current_exemplar() is None
    with provider.get_tracer("app").start_as_current_span("request") as span:
        ctx = span.get_span_context()
        assert current_exemplar() == {
            "trace_id": f"{ctx.trace_id:032x}",
            "span_id": f"{ctx.span_id:016x}",
        }
    assert current_exemplar() is None
