"""make_wsgi_app and make_asgi_app answer as prometheus_client's helpers of the same names do,
with poolwatch's exposition."""

from __future__ import annotations

import asyncio
import gzip
import io
from collections.abc import Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from prometheus_client import make_wsgi_app as their_wsgi_app
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from sqlalchemy import text

import poolwatch
from poolwatch.exposition import (
    CONTENT_TYPE_OPENMETRICS,
    CONTENT_TYPE_TEXT,
    generate_latest,
    make_asgi_app,
    make_wsgi_app,
)

Response = tuple[int, dict[str, str], bytes]


@pytest.fixture
def busy(registry, engines) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    engine = engines(pool_size=2, max_overflow=0)
    poolwatch.instrument(engine, name="apps", registry=registry)
    with engine.connect() as conn:
        for _ in range(3):
            conn.execute(text("SELECT count(*) FROM pg_stat_activity"))
    yield registry


def wsgi(app: Any, method: str = "GET", query: str = "", **headers: str) -> Response:
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "QUERY_STRING": query, "wsgi.input": io.BytesIO()}
    environ.update({f"HTTP_{k.upper()}": v for k, v in headers.items()})
    setup_testing_defaults(environ)
    started: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        started["status"], started["headers"] = status, dict(response_headers)

    body = b"".join(app(environ, start_response))
    return int(started["status"].split()[0]), started["headers"], body


def asgi(app: Any, method: str = "GET", query: str = "", **headers: str) -> Response:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": method, "path": "/metrics", "query_string": query.encode(),
        "headers": [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    start, body = sent
    assert start["type"] == "http.response.start" and body["type"] == "http.response.body"
    return start["status"], {k.decode().title(): v.decode() for k, v in start["headers"]}, body["body"]


CALLS = {"wsgi": (make_wsgi_app, wsgi), "asgi": (make_asgi_app, asgi)}


def _samples(families: Any) -> set[tuple[Any, ...]]:
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in families for s in family.samples if not s.name.endswith("_created")
    }  # fmt: skip


@pytest.mark.parametrize("kind", CALLS)
def test_the_text_format_is_poolwatchs_and_says_what_prometheus_clients_says(busy, kind: str) -> None:  # type: ignore[no-untyped-def]
    make, call = CALLS[kind]
    status, headers, body = call(make(busy))
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE_TEXT
    assert headers["Content-Length"] == str(len(body))
    assert body == generate_latest(busy)
    _, _, theirs = wsgi(their_wsgi_app(busy))
    assert _samples(parse_text(body.decode())) == _samples(parse_text(theirs.decode()))
    assert ('db_client_operation_duration_seconds_count', (
        ("db_client_connection_pool_name", "apps"), ("db_operation_name", "SELECT"),
        ("db_query_summary", "SELECT pg_stat_activity"), ("db_system_name", "postgresql"), ("error_type", ""),
    ), 3.0) in _samples(parse_text(body.decode()))  # fmt: skip


@pytest.mark.parametrize("kind", CALLS)
def test_openmetrics_when_asked_and_gzip_when_accepted(busy, kind: str) -> None:  # type: ignore[no-untyped-def]
    make, call = CALLS[kind]
    status, headers, body = call(
        make(busy), accept="application/openmetrics-text; version=1.0.0,text/plain;q=0.5",
        accept_encoding="gzip, deflate",
    )  # fmt: skip
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE_OPENMETRICS
    assert headers["Content-Encoding"] == "gzip"
    plain = gzip.decompress(body)
    assert plain == generate_latest(busy, openmetrics=True)
    assert plain.endswith(b"# EOF\n")
    assert _samples(parse_openmetrics(plain.decode()))
    _, headers, _ = call(make(busy, disable_compression=True), accept_encoding="gzip")
    assert "Content-Encoding" not in headers


@pytest.mark.parametrize("kind", CALLS)
def test_name_selects_families(busy, kind: str) -> None:  # type: ignore[no-untyped-def]
    make, call = CALLS[kind]
    _, _, body = call(
        make(busy), query="name[]=db_client_connection_max&name[]=db_client_connection_wait_time_seconds_bucket"
    )
    families = {f.name for f in parse_text(body.decode())}
    assert families == {"db_client_connection_max", "db_client_connection_wait_time_seconds"}


@pytest.mark.parametrize("kind", CALLS)
def test_only_get_and_options(busy, kind: str) -> None:  # type: ignore[no-untyped-def]
    make, call = CALLS[kind]
    status, headers, body = call(make(busy), method="POST")
    assert (status, headers["Allow"], body) == (405, "OPTIONS,GET", b"# HTTP 405 Method Not Allowed: POST; use OPTIONS or GET\n")
    status, headers, body = call(make(busy), method="OPTIONS")
    assert (status, headers["Allow"], body) == (200, "OPTIONS,GET", b"")


def test_the_asgi_app_refuses_a_websocket() -> None:
    async def noop(*_: Any) -> Any:
        return {}

    with pytest.raises(ValueError, match="serves HTTP, not 'websocket'"):
        asyncio.run(make_asgi_app()({"type": "websocket"}, noop, noop))
