"""poolwatch's exposition for applications that serve ``/metrics`` themselves.

:func:`generate_latest` is prometheus_client's, with poolwatch's histograms written from their
pre-rendered lines (see :mod:`poolwatch.backends.prometheus.exposition`); :func:`make_asgi_app`
and :func:`make_wsgi_app` serve it, where an application would mount prometheus_client's helpers
of the same names.

In prometheus_client's multiprocess mode (pre-fork servers), :func:`service_registry` is the
registry to serve: every process's series, with dead processes swept at each collection
(:class:`ServiceCollector`, a ``MultiProcessCollector`` that also checks that each process whose
files it reads is alive).
"""

from __future__ import annotations

from poolwatch.backends.multiprocess import ServiceCollector, service_registry
from poolwatch.backends.prometheus.exposition import (
    CONTENT_TYPE_OPENMETRICS,
    CONTENT_TYPE_TEXT,
    ASGIApp,
    WSGIApp,
    generate_latest,
    make_asgi_app,
    make_wsgi_app,
    serve,
)

__all__ = [
    "CONTENT_TYPE_OPENMETRICS",
    "CONTENT_TYPE_TEXT",
    "ASGIApp",
    "ServiceCollector",
    "WSGIApp",
    "generate_latest",
    "make_asgi_app",
    "make_wsgi_app",
    "serve",
    "service_registry",
]
