"""The settings of one ``instrument()`` call: the :class:`Settings` type, its fields with their
defaults and meaning, and the keywords that take objects instead.

Where a value comes from and how it is checked: :mod:`poolwatch.core.config` (keywords, then
``POOLWATCH_*``, then the defaults) and :mod:`poolwatch.core.setting_values`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Final, Literal

__all__ = [
    "DEFAULT_OPERATION_BUCKETS",
    "DEFAULT_POOL_BUCKETS",
    "ENV_SETTINGS",
    "OBJECT_SETTINGS",
    "Settings",
    "with_bound",
]


# Resolves 1 ms up to the default pool_timeout (30 s) and beyond it, so a timed-out wait
# (which lasts slightly longer than pool_timeout) lands in a finite bucket.
DEFAULT_POOL_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
# The OpenTelemetry semantic conventions' advice for db.client.operation.duration.
DEFAULT_OPERATION_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Resolved configuration for one ``instrument()`` call."""

    name: str | None = None
    """The ``db_client_connection_pool_name`` label, unique in the process (default
    ``host:port/database``; a derived name that is taken gets a ``#2`` suffix)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Constant labels on every series (e.g. ``role``); every pool of a registry uses the same
    label names. In the environment: ``k=v,k2=v2``."""
    port: int | None = None
    """Serve ``/metrics`` on this port (1-65535), once per process."""
    addr: str = "0.0.0.0"
    """The address to serve ``/metrics`` on."""
    leak_threshold: float | None = None
    """Seconds after which a checkout counts as a leak (one WARNING with its stack), or None."""
    leak_stacks: bool = True
    """Capture the checkout stack for leak reports (only while leak detection is on)."""
    slow_query_threshold: float | None = None
    """Seconds after which a statement is logged as slow (literals replaced by ``?``), or None."""
    statement_metrics: bool = True
    """Time statements (``db_client_operation_duration_seconds``)."""
    max_query_summaries: int = 100
    """Distinct ``db_query_summary`` values per pool (1-10000); the rest count as ``other``."""
    pool_buckets: tuple[float, ...] = DEFAULT_POOL_BUCKETS
    """Buckets of the wait, use and create histograms, in seconds (fixed per registry)."""
    operation_buckets: tuple[float, ...] = DEFAULT_OPERATION_BUCKETS
    """Buckets of the statement histogram, in seconds."""
    prometheus: bool = True
    """Export to prometheus_client (off for an OpenTelemetry-only pipeline)."""
    # "auto": on when a tracer_provider is passed or the standard OTEL_* environment configures
    # a traces exporter (see tracing_enabled); True/False force it.
    tracing: bool | Literal["auto"] = "auto"
    """Spans for pool waits and statements: ``"auto"`` (on with a tracer provider or an
    ``OTEL_*`` traces exporter), True or False."""
    wait_span_threshold: float = 0.001
    """A checkout that waited at least this many seconds gets a span."""
    exemplars: bool = True
    """Attach the trace id to wait and statement observations (OpenMetrics)."""
    server_limits: bool = True
    """Read the database server's connection limits on new connections (poolwatch_server_*)."""
    application_name: bool | str = False
    """Set the connection's ``application_name`` (PostgreSQL) where the application set none:
    True for the pool's name, or a string."""


# Settings that have an environment variable; ``name`` and ``labels`` too, so a container can
# be configured without code changes.
ENV_SETTINGS: Final = tuple(f.name for f in fields(Settings))

OBJECT_SETTINGS: Final = ("registry", "tracer_provider", "meter_provider")
"""Keywords of ``instrument()`` that take objects (no environment variable)."""


def with_bound(bounds: Sequence[float], bound: float | None) -> tuple[float, ...]:
    """``bounds`` with ``bound`` among them, in order, if it is a positive finite number: a pool's
    wait-time buckets get its timeout, so that no quantile reads above it (a timed-out wait is
    recorded as the timeout itself)."""
    if bound is None or not 0 < bound < math.inf or bound in bounds:
        return tuple(bounds)
    return tuple(sorted((*bounds, float(bound))))
