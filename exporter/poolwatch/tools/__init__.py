"""``poolwatch top`` and ``poolwatch doctor``: read a service's pools from outside.

They read what any scraper reads (``/metrics`` endpoints, or a Prometheus), never poolwatch's
in-process state, so they import nothing from poolwatch's sources or backends: only the standard
library, prometheus_client's parsers and (for the live view) rich. Metric names live in
:mod:`poolwatch.tools.names`.
"""

from __future__ import annotations

__all__: list[str] = []
