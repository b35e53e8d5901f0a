"""poolwatch's fast exposition says exactly what prometheus_client's says, only faster."""

from __future__ import annotations

import gzip
import subprocess
import urllib.request

import pytest
import sqlalchemy
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from sqlalchemy import text

import poolwatch
from poolwatch.exposition import generate_latest, serve
from tests.support.services import free_port, prometheus_binary


def _samples(families) -> set[tuple]:  # type: ignore[no-untyped-def]
    out = set()
    for family in families:
        for s in family.samples:
            if s.name.endswith("_created"):
                continue  # prometheus_client's own counters carry them; both expositions agree
            exemplar = (tuple(sorted(s.exemplar.labels.items())), s.exemplar.value) if s.exemplar else None
            out.add((s.name, tuple(sorted(s.labels.items())), s.value, exemplar))
    return out


@pytest.fixture
def busy_registry(registry, engines):  # type: ignore[no-untyped-def]
    provider = TracerProvider()
    engine = engines(pool_size=1, max_overflow=0, pool_timeout=0.1)
    poolwatch.instrument(
        engine, name='odd "name"\\with\nescapes', labels={"role": "primary"}, registry=registry,
        tracer_provider=provider,
    )  # fmt: skip
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("request"), engine.connect() as c:
        c.execute(text("SELECT 1"))
        with pytest.raises(sqlalchemy.exc.TimeoutError):
            engine.connect()
        with pytest.raises(sqlalchemy.exc.DBAPIError):
            c.execute(text("SELECT 1/0"))
    yield registry
    provider.shutdown()


def test_text_exposition_equals_prometheus_clients(busy_registry) -> None:
    ours = generate_latest(busy_registry).decode()
    theirs = text_latest(busy_registry).decode()
    assert _samples(parse_text(ours)) == _samples(parse_text(theirs))
    assert "db_client_operation_duration_seconds_bucket{" in ours
    assert ours.count("# TYPE db_client_connection_wait_time_seconds histogram") == 1


def test_openmetrics_exposition_equals_prometheus_clients_with_exemplars(busy_registry) -> None:
    ours = generate_latest(busy_registry, openmetrics=True).decode()
    theirs = openmetrics_latest(busy_registry).decode()
    assert ours.endswith("# EOF\n") and ours.count("# EOF") == 1
    mine, reference = _samples(parse_openmetrics(ours)), _samples(parse_openmetrics(theirs))
    assert mine == reference
    assert any(s[3] is not None for s in mine if s[0] == "db_client_connection_wait_time_seconds_bucket")
    assert "# UNIT db_client_connection_wait_time_seconds seconds" in ours


def test_promtool_accepts_the_fast_exposition(busy_registry) -> None:
    result = subprocess.run(
        [prometheus_binary("promtool"), "check", "metrics"], input=generate_latest(busy_registry),
        capture_output=True, timeout=30,
    )  # fmt: skip
    findings = [line for line in (result.stdout + result.stderr).decode().splitlines() if line]
    assert findings == [
        'db_client_connection_count non-histogram and non-summary metrics should not have "_count" suffix'
    ]


def test_http_exporter_negotiates_format_and_compression(busy_registry) -> None:
    port = free_port()
    server = serve("127.0.0.1", port, busy_registry)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            plain = r.read()
        request = urllib.request.Request(url, headers={
            "Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            "Accept-Encoding": "gzip",
        })  # fmt: skip
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            assert r.headers["Content-Encoding"] == "gzip"
            body = gzip.decompress(r.read())
        assert body.endswith(b"# EOF\n")
        assert _samples(parse_text(plain.decode())) == _samples(parse_text(text_latest(busy_registry).decode()))
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        assert err.value.code == 404
        err.value.close()
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------
# The HTTP exporter under client faults, on real loopback sockets.


class _Big:
    """A collector whose exposition is a few megabytes, so that writing it takes many sends."""

    def collect(self):  # type: ignore[no-untyped-def]
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("pw_big", "Padding.", labels=["k"])
        for i in range(40_000):
            family.add_metric([f"{i:08d}" + "x" * 80], i)
        yield family


def _until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    import time

    for _ in range(400):  # bounded: at most ~20 s, and only if something is broken
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def _get(port: int, timeout: float = 30.0) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_client_that_disconnects_mid_response_is_quiet(capfd) -> None:
    import socket
    import struct

    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(_Big())
    server = serve("127.0.0.1", 0, registry)
    port = server.server_address[1]
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            assert s.recv(16).startswith(b"HTTP/1.0 200")
            # Close with a reset while the server is still writing megabytes.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        _until(lambda: server.client_errors == 3, "three client errors counted")
        assert server.handler_errors == 0
        assert _get(port).startswith(b"HTTP/1.0 200")  # and it still serves
    finally:
        server.shutdown()
        server.server_close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err


def test_the_listen_backlog_takes_a_burst_of_connections() -> None:
    import select
    import socket

    from poolwatch.backends.prometheus.exposition import LISTEN_BACKLOG, MetricsServer

    # Not serving: every connection waits in the kernel's queue, which is the backlog.
    server = MetricsServer(("127.0.0.1", 0))
    socks = []
    try:
        for _ in range(100):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(server.server_address)
            socks.append(s)
        connected: set[socket.socket] = set()
        for _ in range(100):  # bounded; a dropped SYN is retried only after a second
            _, writable, _ = select.select([], [s for s in socks if s not in connected], [], 0.05)
            connected.update(
                s for s in writable if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            )
            if len(connected) == len(socks):
                break
        assert len(connected) == 100
        assert LISTEN_BACKLOG >= 128
    finally:
        for s in socks:
            s.close()
        server.server_close()


def test_idle_clients_time_out_and_cannot_take_every_thread() -> None:
    import socket
    import threading

    from poolwatch.backends.prometheus.exposition import MetricsServer

    server = MetricsServer(("127.0.0.1", 0), timeout=1.0, max_handlers=4)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(4)]
    try:
        _until(lambda: server._slots._value == 0, "four handlers busy with idle clients")
        # Every handler is taken: the next client is told so at once instead of a new thread.
        assert _get(port).startswith(b"HTTP/1.0 503")
        assert server.rejected == 1
        # The idle clients are cut off by the socket timeout (they read the server's close).
        for s in idle:
            assert s.recv(65536) is not None
        _until(lambda: server._slots._value == 4, "handlers given back")
        assert _get(port).startswith(b"HTTP/1.0 200")
    finally:
        for s in idle:
            s.close()
        server.shutdown()
        server.server_close()
