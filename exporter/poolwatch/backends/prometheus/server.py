"""The optional HTTP exporter, started once per process by the first ``instrument()`` that asks."""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY, CollectorRegistry

from poolwatch.backends.prometheus.exposition import MetricsServer, serve
from poolwatch.core import lifecycle
from poolwatch.core.errors import logger

__all__ = ["ensure_http_server", "serving_on"]

_lock = threading.Lock()
_serving: tuple[str, int] | None = None
_server: MetricsServer | None = None


def serving_on() -> tuple[str, int] | None:
    return _serving


def ensure_http_server(addr: str, port: int, registry: CollectorRegistry | None) -> bool:
    """Start serving ``/metrics`` unless this process already does. Never raises: a port that
    is taken is logged, because a monitoring side-car must not stop the application booting."""
    global _serving, _server
    with _lock:
        if _serving is not None:
            if _serving != (addr, port):
                logger.warning(
                    "poolwatch: already serving metrics on %s:%d; port=%d ignored",
                    *_serving,
                    port,
                )
            return False
        try:
            _server = serve(addr, port, REGISTRY if registry is None else registry)
        except OSError as e:
            logger.error(
                "poolwatch: cannot serve metrics on %s:%d (%s); the application continues "
                "without the poolwatch HTTP exporter",
                addr,
                port,
                e,
            )
            return False
        _serving = (addr, port)
        logger.info("poolwatch: serving Prometheus metrics on http://%s:%d/metrics", addr, port)
        return True


def _after_fork_in_child() -> None:
    """The serving thread stayed in the parent: this process serves nothing (it says so rather
    than believe it does), and closes its copy of the parent's listening socket."""
    global _serving, _server, _lock
    _lock = threading.Lock()
    if _server is not None:
        _server.close_inherited()
    _server = None
    _serving = None


lifecycle.after_fork_in_child(_after_fork_in_child)
