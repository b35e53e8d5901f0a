"""Typed, keyword-only configuration, with every setting also readable from ``POOLWATCH_*``.

Precedence: an explicit keyword argument, then the environment variable, then the default.
A bad value raises ``ValueError`` at ``instrument()`` time, naming the setting and what it
accepts, so a typo fails at startup rather than silently turning monitoring off. The settings
themselves are in :mod:`poolwatch.core.settings`, the parsing of each value in
:mod:`poolwatch.core.setting_values`; the standard ``OTEL_*`` environment is read here too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from poolwatch.core.setting_values import parse_setting
from poolwatch.core.settings import ENV_SETTINGS, OBJECT_SETTINGS, Settings

__all__ = ["otel_traces_configured", "resolve_settings", "tracing_enabled"]


def _env_name(setting: str) -> str:
    return "POOLWATCH_" + setting.upper()


def resolve_settings(
    overrides: Mapping[str, object], environ: Mapping[str, str] | None = None
) -> Settings:
    """Build :class:`Settings` from keyword overrides and the environment (keywords win)."""
    env = os.environ if environ is None else environ
    known = set(ENV_SETTINGS)
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(
            f"poolwatch: unknown setting(s) {sorted(unknown)}; instrument() accepts "
            f"{sorted(known | set(OBJECT_SETTINGS))}"
        )
    values: dict[str, Any] = {}
    for setting in ENV_SETTINGS:
        if setting in overrides:
            values[setting] = parse_setting(setting, overrides[setting], setting)
            continue
        raw = env.get(_env_name(setting))
        if raw is not None:
            values[setting] = parse_setting(setting, raw, _env_name(setting))
    return Settings(**values)


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
