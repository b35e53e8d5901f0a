"""poolwatch: see your connection pool run dry before your users do.

One line at startup, for a SQLAlchemy engine or a psycopg_pool pool::

    import poolwatch
    poolwatch.instrument(engine)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict, overload

from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine
from typing_extensions import Unpack

from poolwatch import api
from poolwatch.core.instrumentation import Instrumentation
from poolwatch.core.settings import Settings
from poolwatch.core.version import __version__
from poolwatch.sources.sqlalchemy.auto import AllEngines

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "AllEngines",
    "Instrumentation",
    "Options",
    "Settings",
    "__version__",
    "instrument",
    "instrumented",
    "uninstrument",
]

class Options(TypedDict, total=False):
    """The keywords of :func:`instrument` (README, "Configuration")."""

    name: str | None
    labels: Mapping[str, str]
    registry: CollectorRegistry | None
    """Where the series go (default: prometheus_client's ``REGISTRY``)."""
    port: int | None
    addr: str
    leak_threshold: float | None
    leak_stacks: bool
    slow_query_threshold: float | None
    statement_metrics: bool
    max_query_summaries: int
    pool_buckets: Sequence[float]
    operation_buckets: Sequence[float]
    prometheus: bool
    tracing: bool | Literal["auto"]
    wait_span_threshold: float
    exemplars: bool
    server_limits: bool
    application_name: bool | str
    tracer_provider: Any
    """The OpenTelemetry ``TracerProvider`` for spans (default: the global one)."""
    meter_provider: Any
    """An OpenTelemetry ``MeterProvider``: emit the semantic-convention instruments there too."""


_NOT_SETTINGS = ("registry", "tracer_provider", "meter_provider")


@overload
def instrument(engine: None = None, **options: Unpack[Options]) -> AllEngines: ...
@overload
def instrument(engine: Engine | AsyncEngine, **options: Unpack[Options]) -> Instrumentation: ...
@overload
def instrument(engine: Any, **options: Unpack[Options]) -> Instrumentation: ...


def instrument(
    engine: Any = None, **options: Unpack[Options]
) -> Instrumentation | AllEngines:
    """Instrument ``engine`` (an ``Engine`` or ``AsyncEngine``, or a psycopg_pool
    ``ConnectionPool``, ``AsyncConnectionPool``, ``NullConnectionPool`` or
    ``AsyncNullConnectionPool``), or with no engine every engine created from now on. Calling it
    again for the same engine or pool returns the same handle.

    Every setting not passed is read from ``POOLWATCH_<SETTING>`` in the environment, else its
    default (README, "Configuration"). A bad value raises ``ValueError`` naming the setting; an
    unknown keyword raises ``TypeError``.
    """
    result: Instrumentation | AllEngines = api.instrument(engine, dict(options))
    return result


def uninstrument(engine: Any) -> bool:
    """Remove poolwatch from ``engine``; returns whether it was instrumented."""
    return api.uninstrument(engine)


def instrumented(engine: Any) -> Instrumentation | None:
    """The handle of ``engine``'s instrumentation, or None."""
    return api.instrumented(engine)
