"""The ``/metrics`` poolwatch serves: prometheus_client's exposition for everything in the
registry, except poolwatch's own histograms, which are written from their pre-rendered lines
(see :mod:`poolwatch.backends.prometheus.histogram` for why). Text format 0.0.4 or OpenMetrics, as
the scraper asks; gzip when it accepts it.

Applications that serve ``/metrics`` themselves can use :func:`generate_latest` in place of
prometheus_client's to get the same speed; prometheus_client's own exposition shows the same
series, only more slowly.
"""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from poolwatch.backends.prometheus.histogram import rendering_elsewhere
from poolwatch.backends.prometheus.metrics import histogram_families

__all__ = [
    "CONTENT_TYPE_OPENMETRICS",
    "CONTENT_TYPE_TEXT",
    "generate_latest",
    "serve",
]

CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_EOF = b"# EOF\n"


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


def _handler(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def serve(addr: str, port: int, registry: CollectorRegistry = REGISTRY) -> ThreadingHTTPServer:
    """Serve ``/metrics`` from a daemon thread; raises ``OSError`` if the port is taken."""
    server = _Server((addr, port), _handler(registry))
    thread = threading.Thread(
        target=server.serve_forever, name="poolwatch-metrics-http", daemon=True
    )
    thread.start()
    return server
