"""poolwatch's exposition for applications that serve ``/metrics`` themselves.

:func:`generate_latest` is prometheus_client's, with poolwatch's histograms written from their
pre-rendered lines (see :mod:`poolwatch.backends.prometheus.exposition`).
"""

from __future__ import annotations

from poolwatch.backends.prometheus.exposition import (
    CONTENT_TYPE_OPENMETRICS,
    CONTENT_TYPE_TEXT,
    generate_latest,
    serve,
)

__all__ = ["CONTENT_TYPE_OPENMETRICS", "CONTENT_TYPE_TEXT", "generate_latest", "serve"]
