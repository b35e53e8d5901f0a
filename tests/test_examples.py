"""Every recipe under examples/ runs, as a user would copy it, against the real PostgreSQL (and
Redis for Celery), and its metrics say exactly what it did. Each runs in its own process: the
recipes instrument at import, into prometheus_client's default registry, as an application does.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.services import free_port, unavailable, wait_for_port

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
QUERY = "SELECT pg_stat_activity"  # the db_query_summary of every recipe's statement


def sample(exposition: str, name: str, **labels: str) -> float:
    """The one sample called ``name`` whose labels include ``labels``."""
    found = [
        s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def statements(exposition: str, pool: str) -> float:
    return sample(
        exposition, "db_client_operation_duration_seconds_count",
        db_client_connection_pool_name=pool, db_query_summary=QUERY,
    )  # fmt: skip


def run_driver(recipe: str, code: str, env: dict[str, str], timeout: float = 120) -> str:
    """Run ``code`` in a fresh interpreter, in the recipe's directory, and return its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=EXAMPLES / recipe, env={**os.environ, **env, "PYTHONPATH": str(EXAMPLES / recipe)},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def test_flask_sqlalchemy_recipe(postgres_url: str) -> None:
    out = run_driver(
        "flask_sqlalchemy",
        """
        import json
        from app import app, db
        try:
            db.engine  # the literal module-level line, outside an application context
        except RuntimeError as e:
            print(json.dumps({"outside": str(e)}))
        client = app.test_client()
        bodies = [client.get("/connections").get_json() for _ in range(5)]
        metrics = client.get("/metrics")
        print(json.dumps({
            "bodies": bodies, "status": metrics.status_code,
            "type": metrics.headers["Content-Type"], "metrics": metrics.get_data(as_text=True),
        }))
        """,
        {"DATABASE_URL": postgres_url},
    )
    outside, result = (json.loads(line) for line in out.splitlines())
    assert outside["outside"].startswith("Working outside of application context.")
    assert [sorted(b) for b in result["bodies"]] == [["connections"]] * 5
    assert result["status"] == 200 and result["type"] == "text/plain; version=0.0.4; charset=utf-8"
    exposition = result["metrics"]
    assert statements(exposition, "orders") == 5
    # One request at a time: one connection, checked out once per request, back in the pool.
    assert sample(exposition, "db_client_connection_wait_time_seconds_count", db_client_connection_pool_name="orders") == 5
    assert sample(exposition, "db_client_connection_count", db_client_connection_pool_name="orders", db_client_connection_state="used") == 0
    assert sample(exposition, "db_client_connection_count", db_client_connection_pool_name="orders", db_client_connection_state="idle") == 1
    assert sample(exposition, "db_client_connection_max", db_client_connection_pool_name="orders") == 10


@contextlib.contextmanager
def process(cmd: list[str], cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        cmd, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            log, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            log, _ = proc.communicate(timeout=10)
        print(log[-4000:])  # shown with a failure


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:  # follows redirects
        return response.status, dict(response.headers), response.read().decode()


def test_fastapi_async_recipe(postgres_url: str) -> None:
    port = free_port()
    with process(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port), "--log-level", "warning"],
        EXAMPLES / "fastapi_async", {"DATABASE_URL": postgres_url},
    ):
        wait_for_port(port, 60)
        base = f"http://127.0.0.1:{port}"
        bodies = [json.loads(get(f"{base}/connections")[2]) for _ in range(4)]
        status, headers, exposition = get(f"{base}/metrics")
        _, om_headers, openmetrics = get(
            f"{base}/metrics/", {"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert [sorted(b) for b in bodies] == [["connections"]] * 4
    assert status == 200 and headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert statements(exposition, "orders") == 4
    assert sample(exposition, "db_client_connection_wait_time_seconds_count", db_client_connection_pool_name="orders") == 4
    assert sample(exposition, "db_client_connection_count", db_client_connection_pool_name="orders", db_client_connection_state="used") == 0
    assert sample(exposition, "poolwatch_pool_info", db_client_connection_pool_name="orders", pool_class="AsyncAdaptedQueuePool") == 1
    assert om_headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert openmetrics.endswith("# EOF\n")


def test_psycopg_pool_creator_recipe(postgres_url: str) -> None:
    conninfo = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    out = run_driver(
        "psycopg_pool_creator",
        """
        import json
        from prometheus_client import generate_latest
        import app
        times = [app.server_connections() for _ in range(6)]
        stats = app.pg_pool.get_stats()
        metrics = generate_latest().decode()
        app.close()
        print(json.dumps({"times": len(times), "stats": stats, "metrics": metrics}))
        """,
        {"DATABASE_CONNINFO": conninfo},
    )
    result = json.loads(out)
    exposition = result["metrics"]
    assert result["times"] == 6
    # Every checkout borrowed from the psycopg pool and gave the connection back to it.
    assert result["stats"]["requests_num"] == 6
    assert result["stats"]["pool_size"] == 1 and result["stats"]["pool_available"] == 1
    assert statements(exposition, "orders") == 6
    assert sample(exposition, "db_client_connection_create_time_seconds_count", db_client_connection_pool_name="orders") == 6
    assert sample(exposition, "db_client_connection_count", db_client_connection_pool_name="orders", db_client_connection_state="used") == 0
    assert 'db_client_connection_max{db_client_connection_pool_name="orders"' not in exposition
    # ... the limit is psycopg_pool's, and its pool says so.
    psycopg = {"db_client_connection_pool_name": "orders-psycopg"}
    assert sample(exposition, "db_client_connection_max", **psycopg) == 4
    assert sample(exposition, "db_client_connection_wait_time_seconds_count", **psycopg) == 6
    assert sample(exposition, "db_client_connection_count", db_client_connection_state="used", **psycopg) == 0
    assert sample(exposition, "db_client_connection_count", db_client_connection_state="idle", **psycopg) == 1
    # statement_metrics=False there: the engine's series count each statement once.
    assert 'db_client_operation_duration_seconds_count{db_client_connection_pool_name="orders-psycopg"' not in exposition


class _OTLPReceiver(http.server.BaseHTTPRequestHandler):
    received: list[bytes]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.path == "/v1/metrics"
        type(self).received.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def otlp_receiver() -> Iterator[tuple[str, list[bytes]]]:
    handler = type("Receiver", (_OTLPReceiver,), {"received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.received
    finally:
        server.shutdown()
        server.server_close()


def _points(body: bytes) -> dict[str, list[int]]:
    """Each histogram's data point counts in one OTLP export request, by metric name (only the
    recipe's statement, for the statement histogram)."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    request = ExportMetricsServiceRequest.FromString(body)
    out: dict[str, list[int]] = {}
    for resource in request.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.WhichOneof("data") == "histogram":
                    out[metric.name] = [
                        p.count for p in metric.histogram.data_points
                        if {a.key: a.value.string_value for a in p.attributes}.get("db.query.summary", QUERY) == QUERY
                    ]
    return out


def test_aws_lambda_recipe_pushes_its_metrics_at_every_invocation(postgres_url: str) -> None:
    with otlp_receiver() as (endpoint, received):
        out = run_driver(
            "aws_lambda",
            """
            import json
            import handler
            counts = []
            for i in range(3):
                response = handler.handler({"id": i}, None)
                counts.append(response["statusCode"])
            print(json.dumps(counts))
            """,
            {"DATABASE_URL": postgres_url, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
             "AWS_LAMBDA_FUNCTION_NAME": "orders-test"},
        )  # fmt: skip
        requests = list(received)
    assert json.loads(out) == [200, 200, 200]
    # One push per invocation, each before the handler returned; cumulative counts.
    assert len(requests) == 3
    points = [_points(body) for body in requests]
    assert [p["db.client.operation.duration"] for p in points] == [[1], [2], [3]]
    assert [p["db.client.connection.create_time"] for p in points] == [[1], [2], [3]]
    assert [p["db.client.connection.wait_time"] for p in points] == [[1], [2], [3]]


def _redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping())
    except redis.exceptions.RedisError:
        return False


@pytest.mark.scenario
def test_celery_recipe_serves_every_worker_process_from_one_port(
    postgres_url: str, tmp_path: Path
) -> None:
    if not _redis_available():
        unavailable("Redis at 127.0.0.1:6379")
    from celery import Celery

    queue = f"poolwatch-example-{uuid.uuid4().hex[:12]}"
    broker = "redis://127.0.0.1:6379/0"
    metrics_port = free_port()
    env = {
        "DATABASE_URL": postgres_url, "CELERY_BROKER_URL": broker, "CELERY_QUEUE": queue,
        "POOLWATCH_PORT": str(metrics_port), "TMPDIR": str(tmp_path),
    }  # fmt: skip
    client = Celery("client", broker=broker, backend=broker)
    deadline = time.monotonic() + 60
    found: tuple[float, ...] = ()
    try:
        with process(
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-c", "2",
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--loglevel", "WARNING"],
            EXAMPLES / "celery_worker", env,
        ):  # fmt: skip
            results = [
                client.send_task("orders.server_connections", queue=queue).get(timeout=60)
                for _ in range(3)
            ]
            wait_for_port(metrics_port, 30)  # served once, by the main process
            # Each pool process writes its series about once a second: read until all are in.
            while time.monotonic() < deadline:
                exposition = get(f"http://127.0.0.1:{metrics_port}/metrics")[2]
                with contextlib.suppress(AssertionError):  # a series not written yet
                    found = tuple(
                        sample(exposition, name, db_client_connection_pool_name="orders-worker",
                               **labels)
                        for name, labels in [
                            ("db_client_connection_max", {}),
                            ("db_client_connection_wait_time_seconds_count", {}),
                            ("db_client_operation_duration_seconds_count",
                             {"db_query_summary": QUERY}),
                            ("db_client_connection_count", {"db_client_connection_state": "used"}),
                        ]
                    )  # fmt: skip
                if found == (4, 3, 3, 0):
                    break
                time.sleep(0.2)
    finally:
        client.close()
    assert len(results) == 3 and all(isinstance(r, int) and r >= 1 for r in results)
    # Both pool processes' pools of 2 in one scrape; the three tasks' checkouts and statements.
    assert found == (4, 3, 3, 0)
    assert list(tmp_path.iterdir()) == []  # the private directory went with the worker


@pytest.mark.scenario
def test_gunicorn_recipe_serves_every_worker_from_one_port(postgres_url: str, tmp_path: Path) -> None:
    gunicorn = Path(sys.executable).parent / "gunicorn"
    if not gunicorn.exists():
        unavailable("gunicorn in the test venv")
    app_port, metrics_port = free_port(), free_port()
    pool = "recipe-gunicorn-" + uuid.uuid4().hex[:6]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMETHEUS_", "POOLWATCH_"))}
    env.update(DATABASE_URL=postgres_url, POOL_NAME=pool, POOLWATCH_PORT=str(metrics_port))
    recipe = EXAMPLES / "gunicorn"
    cmd = [str(gunicorn), "-c", str(recipe / "gunicorn.conf.py"), "-b", f"127.0.0.1:{app_port}",
           "--control-socket", str(tmp_path / "gunicorn.ctl"), "app:app"]  # fmt: skip
    with process(cmd, recipe, env):
        wait_for_port(app_port, 60)
        wait_for_port(metrics_port, 60)
        for _ in range(6):
            assert get(f"http://127.0.0.1:{app_port}/")[2] == "1\n"
        deadline = time.monotonic() + 30
        maxima = waits = None
        while time.monotonic() < deadline:  # the workers' samplers write once a second
            body = get(f"http://127.0.0.1:{metrics_port}/metrics")[2]
            try:
                maxima = sample(
                    body, "db_client_connection_max", db_client_connection_pool_name=pool
                )
                waits = sample(
                    body, "db_client_connection_wait_time_seconds_count",
                    db_client_connection_pool_name=pool,
                )  # fmt: skip
            except AssertionError:  # not every worker's series written yet
                pass
            if (maxima, waits) == (10, 6):
                break
            time.sleep(0.2)
        assert (maxima, waits) == (10, 6)  # two workers of 5, six requests: one scrape, all
