"""Typed, keyword-only configuration, with every setting also readable from ``POOLWATCH_*``.

Precedence: an explicit keyword argument, then the environment variable, then the default.
A bad value raises ``ValueError`` at ``instrument()`` time, naming the setting and what it
accepts, so a typo fails at startup rather than silently turning monitoring off.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal

from poolwatch.core.catalog import CATALOG, POOL_LABEL

__all__ = [
    "DEFAULT_OPERATION_BUCKETS",
    "DEFAULT_POOL_BUCKETS",
    "OBJECT_SETTINGS",
    "Settings",
    "check_objects",
    "otel_traces_configured",
    "resolve_settings",
    "tracing_enabled",
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

_LABEL_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
# Label names poolwatch itself puts on its series (the catalog's), and Prometheus's own.
_RESERVED_LABELS = frozenset(
    {POOL_LABEL, *(label for m in CATALOG for label in m.labels), "job", "instance", "le"}
)


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
_ENV_SETTINGS: Final = tuple(f.name for f in fields(Settings))


def _env_name(setting: str) -> str:
    return "POOLWATCH_" + setting.upper()


def _fail(setting: str, value: object, accepts: str, source: str) -> ValueError:
    return ValueError(f"poolwatch: invalid {source}={value!r}; {setting} {accepts}")


def _parse_bool(setting: str, raw: object, source: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
    raise _fail(setting, raw, "accepts true/false (1/0, yes/no, on/off)", source)


def _parse_seconds(setting: str, raw: object, source: str, *, optional: bool) -> float | None:
    accepts = "accepts a number of seconds > 0" + (" or 'off'" if optional else "")
    if raw is None and optional:
        return None
    if isinstance(raw, str):
        if optional and raw.strip().lower() in ("", "off", "none", "false"):
            return None
        try:
            raw = float(raw)
        except ValueError:
            raise _fail(setting, raw, accepts, source) from None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise _fail(setting, raw, accepts, source)
    value = float(raw)
    if not math.isfinite(value) or value <= 0:
        raise _fail(setting, raw, accepts, source)
    return value


def _parse_nonneg_seconds(setting: str, raw: object, source: str) -> float:
    accepts = "accepts a number of seconds >= 0"
    if isinstance(raw, str):
        try:
            raw = float(raw)
        except ValueError:
            raise _fail(setting, raw, accepts, source) from None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise _fail(setting, raw, accepts, source)
    if not math.isfinite(raw) or raw < 0:
        raise _fail(setting, raw, accepts, source)
    return float(raw)


def _parse_int(setting: str, raw: object, source: str, low: int, high: int) -> int:
    accepts = f"accepts a whole number from {low} to {high}"
    if isinstance(raw, str):
        try:
            raw = int(raw.strip())
        except ValueError:
            raise _fail(setting, raw, accepts, source) from None
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise _fail(setting, raw, accepts, source)
    return raw


def _parse_port(setting: str, raw: object, source: str) -> int | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "off")):
        return None
    return _parse_int(setting, raw, source, 1, 65535)


def _parse_str(setting: str, raw: object, source: str, *, optional: bool) -> str | None:
    if raw is None and optional:
        return None
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 200:
        raise _fail(setting, raw, "accepts a non-empty string of at most 200 characters", source)
    return raw.strip()


# RFC 1123 host names: labels of letters, digits and hyphens, not starting or ending in one.
_HOST_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(\.{_HOST_LABEL})*")


def _parse_addr(setting: str, raw: object, source: str) -> str:
    accepts = (
        "accepts an IP address to listen on (0.0.0.0, 127.0.0.1, ::) or a host name, without a "
        "scheme or a port"
    )
    if not isinstance(raw, str) or not raw.strip():
        raise _fail(setting, raw, accepts, source)
    value = raw.strip()
    try:
        ipaddress.ip_address(value.strip("[]"))
        return value.strip("[]")
    except ValueError:
        pass
    # A dotted quad that is not an address (999.1.1.1) is not a host name either.
    if _HOSTNAME.fullmatch(value) and not value.replace(".", "").isdigit():
        return value
    raise _fail(setting, raw, accepts, source)


def _parse_labels(setting: str, raw: object, source: str) -> dict[str, str]:
    accepts = (
        "accepts a mapping of label names ([a-zA-Z_][a-zA-Z0-9_]*, not reserved) to string "
        "values, or 'k=v,k2=v2' in the environment"
    )
    if raw is None:
        return {}
    items: list[tuple[object, object]]
    if isinstance(raw, str):
        items = []
        for part in raw.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep:
                raise _fail(setting, raw, accepts, source)
            items.append((key.strip(), value.strip()))
    elif isinstance(raw, Mapping):
        items = list(raw.items())
    else:
        raise _fail(setting, raw, accepts, source)
    out: dict[str, str] = {}
    for label, label_value in items:
        if (
            not isinstance(label, str)
            or not label
            or label[0].isdigit()
            or label.startswith("__")
            or not set(label) <= _LABEL_NAME_CHARS
            or label in _RESERVED_LABELS
            or not isinstance(label_value, str)
        ):
            raise _fail(setting, raw, accepts, source)
        out[label] = label_value
    return out


def _parse_buckets(setting: str, raw: object, source: str) -> tuple[float, ...]:
    accepts = "accepts an increasing sequence of positive finite seconds, e.g. 0.001,0.01,0.1,1"
    if isinstance(raw, str):
        try:
            raw = [float(p) for p in raw.split(",") if p.strip()]
        except ValueError:
            raise _fail(setting, raw, accepts, source) from None
    if not isinstance(raw, (list, tuple)) or not raw:
        raise _fail(setting, raw, accepts, source)
    values: list[float] = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(setting, raw, accepts, source)
        values.append(float(v))
    if any(not math.isfinite(v) or v <= 0 for v in values) or any(
        b <= a for a, b in itertools.pairwise(values)
    ):
        raise _fail(setting, raw, accepts, source)
    return tuple(values)


def _parse_application_name(setting: str, raw: object, source: str) -> bool | str:
    accepts = (
        "accepts true (the pool's name), false, or a name of at most 63 printable ASCII "
        "characters"
    )
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("", "0", "false", "no", "off"):
            return False
        value = raw.strip()
        if len(value) <= 63 and value.isascii() and value.isprintable():
            return value
    raise _fail(setting, raw, accepts, source)


def _parse(setting: str, raw: object, source: str) -> Any:
    if setting == "name":
        return _parse_str(setting, raw, source, optional=True)
    if setting == "addr":
        return _parse_addr(setting, raw, source)
    if setting == "labels":
        return _parse_labels(setting, raw, source)
    if setting == "port":
        return _parse_port(setting, raw, source)
    if setting in ("leak_threshold", "slow_query_threshold"):
        return _parse_seconds(setting, raw, source, optional=True)
    if setting == "wait_span_threshold":
        return _parse_nonneg_seconds(setting, raw, source)
    if setting == "max_query_summaries":
        return _parse_int(setting, raw, source, 1, 10_000)
    if setting in ("pool_buckets", "operation_buckets"):
        return _parse_buckets(setting, raw, source)
    if setting == "tracing":
        if isinstance(raw, str) and raw.strip().lower() == "auto":
            return "auto"
        try:
            return _parse_bool(setting, raw, source)
        except ValueError:
            accepts = "accepts auto or true/false (1/0, yes/no, on/off)"
            raise _fail(setting, raw, accepts, source) from None
    if setting == "application_name":
        return _parse_application_name(setting, raw, source)
    if setting in ("leak_stacks", "statement_metrics", "prometheus", "exemplars", "server_limits"):
        return _parse_bool(setting, raw, source)
    raise AssertionError(setting)  # pragma: no cover - every field is handled above


def resolve_settings(
    overrides: Mapping[str, object], environ: Mapping[str, str] | None = None
) -> Settings:
    """Build :class:`Settings` from keyword overrides and the environment (keywords win)."""
    env = os.environ if environ is None else environ
    known = set(_ENV_SETTINGS)
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(
            f"poolwatch: unknown setting(s) {sorted(unknown)}; instrument() accepts "
            f"{sorted(known | set(OBJECT_SETTINGS))}"
        )
    values: dict[str, Any] = {}
    for setting in _ENV_SETTINGS:
        if setting in overrides:
            values[setting] = _parse(setting, overrides[setting], setting)
            continue
        raw = env.get(_env_name(setting))
        if raw is not None:
            values[setting] = _parse(setting, raw, _env_name(setting))
    return Settings(**values)


OBJECT_SETTINGS: Final = ("registry", "tracer_provider", "meter_provider")
"""Keywords of ``instrument()`` that take objects (no environment variable)."""


def check_objects(objects: Mapping[str, object]) -> None:
    """``registry=`` a prometheus_client ``CollectorRegistry``; ``tracer_provider=`` an object with
    ``get_tracer``; ``meter_provider=`` an object with ``get_meter`` (None: the default)."""
    wants = {
        "registry": ("register", "a prometheus_client CollectorRegistry"),
        "tracer_provider": ("get_tracer", "an OpenTelemetry TracerProvider"),
        "meter_provider": ("get_meter", "an OpenTelemetry MeterProvider"),
    }
    for setting, value in objects.items():
        method, what = wants[setting]
        if value is not None and not callable(getattr(value, method, None)):
            raise TypeError(
                f"poolwatch: invalid {setting}={value!r} ({type(value).__name__}); {setting} "
                f"accepts {what} or None"
            )


def with_bound(bounds: Sequence[float], bound: float | None) -> tuple[float, ...]:
    """``bounds`` with ``bound`` among them, in order, if it is a positive finite number: a pool's
    wait-time buckets get its timeout, so that no quantile reads above it (a timed-out wait is
    recorded as the timeout itself)."""
    if bound is None or not 0 < bound < math.inf or bound in bounds:
        return tuple(bounds)
    return tuple(sorted((*bounds, float(bound))))


def otel_traces_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard OpenTelemetry environment sets up a traces exporter: the SDK is not
    disabled and ``OTEL_TRACES_EXPORTER`` names an exporter other than ``none``, or (exporter left
    to its ``otlp`` default) an OTLP endpoint is set. What ``opentelemetry-instrument`` reads."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return any(e.strip() not in ("", "none") for e in exporters.split(","))
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def tracing_enabled(
    setting: bool | Literal["auto"],
    tracer_provider: object = None,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Resolve ``tracing``: an explicit True/False wins; ``auto`` is on when a tracer provider was
    passed or :func:`otel_traces_configured`, and OpenTelemetry is importable (``auto`` never
    fails for want of the optional dependency; ``tracing=True`` does, with a clear message)."""
    if setting != "auto":
        return bool(setting)
    if tracer_provider is None and not otel_traces_configured(environ):
        return False
    import importlib.util

    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False
