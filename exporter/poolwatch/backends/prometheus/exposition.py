"""The ``/metrics`` poolwatch serves: prometheus_client's exposition for everything in the
registry, except poolwatch's own histograms, which are written from their pre-rendered lines
(see :mod:`poolwatch.backends.prometheus.histogram` for why). Text format 0.0.4 or OpenMetrics, as
the scraper asks; gzip when it accepts it.

Applications that serve ``/metrics`` themselves can use :func:`generate_latest` in place of
prometheus_client's to get the same speed, or mount :func:`make_asgi_app` / :func:`make_wsgi_app`
(the same contract as prometheus_client's helpers of those names); prometheus_client's own
exposition shows the same series, only more slowly.
"""

from __future__ import annotations

import gzip
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from poolwatch.backends.prometheus.histogram import rendering_elsewhere
from poolwatch.backends.prometheus.metrics import histogram_families
from poolwatch.core.errors import logger

__all__ = [
    "CONTENT_TYPE_OPENMETRICS",
    "CONTENT_TYPE_TEXT",
    "HANDLER_TIMEOUT",
    "LISTEN_BACKLOG",
    "MAX_HANDLERS",
    "ASGIApp",
    "MetricsServer",
    "WSGIApp",
    "generate_latest",
    "make_asgi_app",
    "make_wsgi_app",
    "serve",
]

CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_EOF = b"# EOF\n"

LISTEN_BACKLOG = 128
"""Connections the kernel queues while the accept loop is busy (socketserver's default is 5, at
which a burst of connects has most of them retried by the client a second later)."""
HANDLER_TIMEOUT = 10.0
"""Seconds one read or write on a scrape's socket may block: a client that connects and sends
nothing, or stops reading, gives its thread back after this."""
MAX_HANDLERS = 16
"""Scrapes served at once; past this a connection is answered 503 at once and closed, so idle or
stuck clients cannot make the exporter start threads without limit."""
_BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
# What a client that goes away or stalls does to a handler: nothing the app can act on.
_CLIENT_FAULTS = (ConnectionError, TimeoutError)
_LOG_INTERVAL = 60.0


def generate_latest(registry: CollectorRegistry = REGISTRY, *, openmetrics: bool = False) -> bytes:
    """The registry's exposition, with poolwatch's histograms written fast."""
    # A registry that writes itself faster (the multiprocess backend's service registry).
    render = getattr(registry, "render_exposition", None)
    if callable(render):
        rendered: bytes = render(openmetrics=openmetrics)
        return rendered
    families = histogram_families(registry)
    if not families:
        return (openmetrics_latest if openmetrics else text_latest)(registry)
    with rendering_elsewhere():
        rest = (openmetrics_latest if openmetrics else text_latest)(registry)
    ours: list[str] = []
    for family in families:
        family.render(ours, openmetrics=openmetrics)
    body = "".join(ours).encode()
    if openmetrics and rest.endswith(_EOF):
        return rest[: -len(_EOF)] + body + _EOF
    return rest + body


def _wants_openmetrics(accept: str) -> bool:
    # What prometheus_client's choose_encoder decides: OpenMetrics when it is asked for at all.
    return any(
        part.split(";")[0].strip() == "application/openmetrics-text" for part in accept.split(",")
    )


def _handler(registry: CollectorRegistry, io_timeout: float) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        timeout = io_timeout  # StreamRequestHandler.setup puts it on the socket

        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/", "/metrics"):
                self.send_error(404)
                return
            openmetrics = _wants_openmetrics(self.headers.get("Accept", ""))
            try:
                body = generate_latest(registry, openmetrics=openmetrics)
            except Exception:
                self.send_error(500, "error generating metrics")
                raise
            self.send_response(200)
            self.send_header(
                "Content-Type", CONTENT_TYPE_OPENMETRICS if openmetrics else CONTENT_TYPE_TEXT
            )
            if "gzip" in self.headers.get("Accept-Encoding", ""):
                body = gzip.compress(body, compresslevel=1)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds is not worth a log line

    return MetricsHandler


_ALLOW = "OPTIONS,GET"


def _respond(
    registry: CollectorRegistry,
    method: str,
    accept: str,
    accept_encoding: str,
    query: str,
    disable_compression: bool,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body for one request, as prometheus_client's helpers answer it."""
    if method == "OPTIONS":
        return 200, [("Allow", _ALLOW)], b""
    if method != "GET":
        message = f"# HTTP 405 Method Not Allowed: {method}; use OPTIONS or GET\n"
        return 405, [("Allow", _ALLOW)], message.encode()
    openmetrics = _wants_openmetrics(accept)
    names = parse_qs(query).get("name[]")
    if names:
        # A restricted registry holds no poolwatch histograms of its own: prometheus_client
        # renders the few families asked for (slower per line, and only those lines).
        restricted = registry.restricted_registry(names)
        body = (openmetrics_latest if openmetrics else text_latest)(restricted)
    else:
        body = generate_latest(registry, openmetrics=openmetrics)
    headers = [("Content-Type", CONTENT_TYPE_OPENMETRICS if openmetrics else CONTENT_TYPE_TEXT)]
    if not disable_compression and "gzip" in accept_encoding:
        body = gzip.compress(body, compresslevel=1)
        headers.append(("Content-Encoding", "gzip"))
    return 200, headers, body


_StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WSGIApp = Callable[[MutableMapping[str, Any], _StartResponse], Iterable[bytes]]
"""A WSGI application: ``app(environ, start_response)``."""
_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[_Scope, _Receive, _Send], Awaitable[None]]
"""An ASGI 3 application: ``await app(scope, receive, send)``."""
_REASONS = {200: "OK", 405: "Method Not Allowed"}


def make_wsgi_app(
    registry: CollectorRegistry = REGISTRY, disable_compression: bool = False
) -> WSGIApp:
    """A WSGI app serving ``registry`` with :func:`generate_latest`: text format or
    OpenMetrics as the ``Accept`` header asks, gzip when accepted (unless
    ``disable_compression``), ``?name[]=...`` to select families; any path, like
    prometheus_client's ``make_wsgi_app``, which it replaces."""

    def metrics_app(
        environ: MutableMapping[str, Any], start_response: _StartResponse
    ) -> Iterable[bytes]:
        status, headers, body = _respond(
            registry,
            environ.get("REQUEST_METHOD", "GET"),
            environ.get("HTTP_ACCEPT", ""),
            environ.get("HTTP_ACCEPT_ENCODING", ""),
            environ.get("QUERY_STRING", ""),
            disable_compression,
        )
        headers.append(("Content-Length", str(len(body))))
        start_response(f"{status} {_REASONS[status]}", headers)
        return [body]

    return metrics_app


def make_asgi_app(
    registry: CollectorRegistry = REGISTRY, disable_compression: bool = False
) -> ASGIApp:
    """An ASGI app serving ``registry`` with :func:`generate_latest` (the same answers as
    :func:`make_wsgi_app`), like prometheus_client's ``make_asgi_app``, which it replaces.
    The exposition runs on the event loop, as prometheus_client's does: it is CPU-bound under
    the GIL, so a thread would not make it cheaper for the other requests."""

    async def metrics_app(scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope.get("type") != "http":
            raise ValueError(f"poolwatch's metrics app serves HTTP, not {scope.get('type')!r}")
        headers: dict[str, list[str]] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            headers.setdefault(raw_name.decode("latin-1").lower(), []).append(
                raw_value.decode("latin-1")
            )
        status, response_headers, body = _respond(
            registry,
            scope.get("method", "GET"),
            ",".join(headers.get("accept", ())),
            ",".join(headers.get("accept-encoding", ())),
            scope.get("query_string", b"").decode("latin-1"),
            disable_compression,
        )
        response_headers.append(("Content-Length", str(len(body))))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in response_headers],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return metrics_app


class MetricsServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a real listen backlog, socket timeouts, at most
    ``max_handlers`` handler threads, and nothing on the application's stderr: a client that
    disconnects or stalls is counted in ``client_errors`` and logged at DEBUG; any other error in
    a handler is counted in ``handler_errors`` and logged at most once a minute."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry = REGISTRY,
        *,
        timeout: float = HANDLER_TIMEOUT,
        max_handlers: int = MAX_HANDLERS,
    ) -> None:
        self._slots = threading.BoundedSemaphore(max_handlers)
        self.client_errors = 0
        self.handler_errors = 0
        self.rejected = 0
        self._last_logged = float("-inf")
        super().__init__(address, _handler(registry, timeout))

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            # Answered from the accept loop without blocking it: the reply fits the socket's
            # send buffer of a connection that has just been accepted.
            self.rejected += 1
            try:
                request.setblocking(False)
                request.send(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread was started to release it
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver's default prints a traceback to stderr, which is the application's.
        error = sys.exc_info()[1]
        if isinstance(error, _CLIENT_FAULTS):
            self.client_errors += 1
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("poolwatch: a metrics client went away (%s)", type(error).__name__)
            return
        self.handler_errors += 1
        now = time.monotonic()
        if now - self._last_logged >= _LOG_INTERVAL:
            self._last_logged = now
            logger.error(
                "poolwatch: error serving /metrics (logged at most every %.0f s)",
                _LOG_INTERVAL,
                exc_info=error,
            )

    def close_inherited(self) -> None:
        """In a forked child: the serving thread stayed in the parent, whose listening socket
        this is a copy of; close the copy and leave the parent's serving."""
        try:
            self.socket.close()
        except OSError:
            pass


def serve(addr: str, port: int, registry: CollectorRegistry = REGISTRY) -> MetricsServer:
    """Serve ``/metrics`` from a daemon thread; raises ``OSError`` if the port is taken."""
    server = MetricsServer((addr, port), registry)
    thread = threading.Thread(
        target=server.serve_forever, name="poolwatch-metrics-http", daemon=True
    )
    thread.start()
    return server
