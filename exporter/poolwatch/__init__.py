"""poolwatch: see your SQLAlchemy connection pool run dry before your users do.

One line at startup::

    import poolwatch
    poolwatch.instrument(engine)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, overload

from prometheus_client import CollectorRegistry

from .auto import AllEngines, instrument_all
from .config import UNSET, Settings
from .instrumentation import Instrumentation, instrument_engine, instrumented, uninstrument_engine

__all__ = [
    "AllEngines",
    "Instrumentation",
    "Settings",
    "__version__",
    "instrument",
    "instrumented",
    "uninstrument",
]

__version__ = "0.1.0"


@overload
def instrument(engine: None = None, **kwargs: Any) -> AllEngines: ...
@overload
def instrument(engine: Any, **kwargs: Any) -> Instrumentation: ...


def instrument(
    engine: Any = None,
    *,
    name: str | None | Any = UNSET,
    labels: Mapping[str, str] | Any = UNSET,
    registry: CollectorRegistry | None = None,
    port: int | None | Any = UNSET,
    addr: str | Any = UNSET,
    leak_threshold: float | None | Any = UNSET,
    leak_stacks: bool | Any = UNSET,
    slow_query_threshold: float | None | Any = UNSET,
    statement_metrics: bool | Any = UNSET,
    max_query_summaries: int | Any = UNSET,
    pool_buckets: Sequence[float] | Any = UNSET,
    operation_buckets: Sequence[float] | Any = UNSET,
    prometheus: bool | Any = UNSET,
    tracing: bool | Any = UNSET,
    wait_span_threshold: float | Any = UNSET,
    exemplars: bool | Any = UNSET,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> Instrumentation | AllEngines:
    """Instrument ``engine`` (an ``Engine`` or ``AsyncEngine``), or with no engine every engine
    created from now on. Calling it again for the same engine returns the same handle.

    Every setting not passed is read from ``POOLWATCH_<SETTING>`` in the environment, else its
    default (README, "Configuration"). A bad value raises ``ValueError`` naming the setting.
    """
    overrides = {
        key: value
        for key, value in (
            ("name", name), ("labels", labels), ("port", port), ("addr", addr),
            ("leak_threshold", leak_threshold), ("leak_stacks", leak_stacks),
            ("slow_query_threshold", slow_query_threshold),
            ("statement_metrics", statement_metrics),
            ("max_query_summaries", max_query_summaries), ("pool_buckets", pool_buckets),
            ("operation_buckets", operation_buckets), ("prometheus", prometheus),
            ("tracing", tracing), ("wait_span_threshold", wait_span_threshold),
            ("exemplars", exemplars),
        )  # fmt: skip
        if value is not UNSET
    }
    if engine is None:
        from .config import resolve_settings

        resolve_settings(overrides)  # fail now, not at the first create_engine()
        return instrument_all(
            overrides,
            registry,
            {"tracer_provider": tracer_provider, "meter_provider": meter_provider},
        )
    return instrument_engine(
        engine,
        overrides,
        registry=registry,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )


def uninstrument(engine: Any) -> bool:
    """Remove poolwatch from ``engine``; returns whether it was instrumented."""
    return uninstrument_engine(engine)
