"""What a Lambda invocation pays to push poolwatch's metrics: ``MeterProvider.force_flush()``
over OTLP/HTTP (protobuf) to a receiver in another process on loopback, as in
examples/aws_lambda/handler.py (NullPool, one statement per invocation, flushed before the
handler returns).

    .venv/bin/python benchmarks/lambda_flush.py [--quick] [--json PATH]

Prints the flush's wall time per invocation (median, p95, mean), the invocation's own time
without it, and the size of one export request. The receiver answers 200 at once, so the
figure is the SDK's collection and encoding plus one loopback HTTP round trip: a collector
extension in the Lambda environment adds only its own handling.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

RECEIVER = textwrap.dedent(
    """
    import http.server, sys

    class Receiver(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            size = int(self.headers["Content-Length"])
            self.rfile.read(size)
            sys.stdout.write(f"{size}\\n")
            sys.stdout.flush()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few invocations (CI smoke run)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    invocations = 20 if args.quick else 400

    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        figures = _measure(f"http://127.0.0.1:{port}/v1/metrics", invocations)
    finally:
        receiver.terminate()
        sizes = [int(line) for line in receiver.communicate(timeout=10)[0].split()]
    figures["requests"] = len(sizes)
    figures["request_bytes_last"] = sizes[-1] if sizes else 0
    print(
        f"lambda_flush: {invocations} invocations, {figures['requests']} OTLP requests"
        f" ({figures['request_bytes_last']} bytes each at the end)\n"
        f"  force_flush per invocation: median {figures['flush_median_ms']:.2f} ms,"
        f" p95 {figures['flush_p95_ms']:.2f} ms, mean {figures['flush_mean_ms']:.2f} ms\n"
        f"  the invocation without it (connect, SELECT, close on SQLite): median"
        f" {figures['work_median_ms']:.3f} ms"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def _measure(endpoint: str, invocations: int) -> dict[str, float]:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    import poolwatch

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint), export_interval_millis=math.inf
    )
    provider = MeterProvider(metric_readers=[reader])
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/lambda.db", poolclass=NullPool)
        poolwatch.instrument(engine, name="lambda", meter_provider=provider, prometheus=False)
        work: list[float] = []
        flush: list[float] = []
        for _ in range(invocations):
            t0 = time.perf_counter()
            with engine.connect() as conn:
                conn.execute(text("SELECT 1")).scalar_one()
            t1 = time.perf_counter()
            if not provider.force_flush(timeout_millis=5_000):
                raise RuntimeError("force_flush timed out")
            t2 = time.perf_counter()
            work.append(t1 - t0)
            flush.append(t2 - t1)
        poolwatch.uninstrument(engine)
        engine.dispose()
    provider.shutdown()
    ms = [f * 1000 for f in flush]
    return {
        "invocations": invocations,
        "flush_median_ms": statistics.median(ms),
        "flush_p95_ms": statistics.quantiles(ms, n=20)[-1],
        "flush_mean_ms": statistics.fmean(ms),
        "work_median_ms": statistics.median(work) * 1000,
    }


if __name__ == "__main__":
    sys.exit(main())
