"""An AWS Lambda handler: NullPool, metrics pushed over OTLP/HTTP at the end of every invocation.

Nothing scrapes a Lambda function, and between invocations its execution environment is frozen
(no background thread runs, and it may never thaw): so the metrics are pushed, and flushed
before the handler returns. ``force_flush()`` sends one OTLP/HTTP request per invocation, to
a collector next to the function (the AWS Distro for OpenTelemetry Lambda layer, or an
OpenTelemetry Collector); docs/performance.md gives its measured cost. The endpoint comes from
the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._METRICS_ENDPOINT``).

NullPool: a pooled connection would sit open through the freeze and be dropped by the server
or a proxy (RDS Proxy pools for you). Every invocation opens and closes its own, which
poolwatch shows as ``db_client_connection_create_time_seconds``, one per checkout.
"""

from __future__ import annotations

import math
import os
from typing import Any

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import poolwatch

# Module level runs once per cold start; the frozen environment keeps it for the next ones.
# An infinite interval: no background export thread, only the flush in the handler.
reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=math.inf)
provider = MeterProvider(
    metric_readers=[reader],
    resource=Resource.create(
        {"service.name": os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "orders-lambda")}
    ),
)
engine = create_engine(
    os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/postgres"),
    poolclass=NullPool,
)
poolwatch.instrument(engine, name="orders", meter_provider=provider, prometheus=False)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        with engine.connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM pg_stat_activity")).scalar_one()
        return {"statusCode": 200, "body": f'{{"connections": {count}}}'}
    finally:
        provider.force_flush(timeout_millis=5_000)
