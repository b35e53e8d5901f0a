"""One setting's value, from a keyword argument or a ``POOLWATCH_*`` string: parsed and checked,
or a ``ValueError`` that names the setting, the value and what it accepts (so a typo fails at
startup rather than silently turning monitoring off). The object keywords are checked for the
methods poolwatch calls on them.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import re
from collections.abc import Mapping
from typing import Any

from poolwatch.core.catalog import CATALOG, POOL_LABEL

__all__ = ["check_objects", "parse_bool", "parse_setting"]

_LABEL_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
# Label names poolwatch itself puts on its series (the catalog's), and Prometheus's own.
_RESERVED_LABELS = frozenset(
    {POOL_LABEL, *(label for m in CATALOG for label in m.labels), "job", "instance", "le"}
)
_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")


def _fail(setting: str, value: object, accepts: str, source: str) -> ValueError:
    return ValueError(f"poolwatch: invalid {source}={value!r}; {setting} {accepts}")


def _bool_word(raw: str) -> bool | None:
    """True or False for the words that mean it (1/0, true/false, yes/no, on/off), else None."""
    low = raw.strip().lower()
    if low in _TRUE_WORDS:
        return True
    if low in _FALSE_WORDS:
        return False
    return None


def parse_bool(setting: str, raw: object, source: str) -> bool:
    """A boolean setting (``source`` names where ``raw`` came from, for the message)."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        value = _bool_word(raw)
        if value is not None:
            return value
    raise _fail(setting, raw, "accepts true/false (1/0, yes/no, on/off)", source)


def _number(setting: str, raw: object, source: str, accepts: str) -> float:
    """``raw`` as a number (a string read as a float; a bool is not a number)."""
    if isinstance(raw, str):
        try:
            raw = float(raw)
        except ValueError:
            raise _fail(setting, raw, accepts, source) from None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise _fail(setting, raw, accepts, source)
    return raw


def _parse_seconds(setting: str, raw: object, source: str, *, optional: bool) -> float | None:
    accepts = "accepts a number of seconds > 0" + (" or 'off'" if optional else "")
    if raw is None and optional:
        return None
    if isinstance(raw, str) and optional and raw.strip().lower() in ("", "off", "none", "false"):
        return None
    number = _number(setting, raw, source, accepts)
    value = float(number)
    if not math.isfinite(value) or value <= 0:
        raise _fail(setting, number, accepts, source)
    return value


def _parse_nonneg_seconds(setting: str, raw: object, source: str) -> float:
    accepts = "accepts a number of seconds >= 0"
    number = _number(setting, raw, source, accepts)
    if not math.isfinite(number) or number < 0:
        raise _fail(setting, number, accepts, source)
    return float(number)


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
        "accepts true (the pool's name), false, or a name of at most 63 printable ASCII characters"
    )
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        value = _bool_word(raw) if raw.strip() else False
        if value is not None:
            return value
        name = raw.strip()
        if len(name) <= 63 and name.isascii() and name.isprintable():
            return name
    raise _fail(setting, raw, accepts, source)


def parse_setting(setting: str, raw: object, source: str) -> Any:
    """The value of the :class:`~poolwatch.core.settings.Settings` field ``setting`` from
    ``raw``, a keyword's value or an environment string (``source`` says which)."""
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
            return parse_bool(setting, raw, source)
        except ValueError:
            accepts = "accepts auto or true/false (1/0, yes/no, on/off)"
            raise _fail(setting, raw, accepts, source) from None
    if setting == "application_name":
        return _parse_application_name(setting, raw, source)
    if setting in ("leak_stacks", "statement_metrics", "prometheus", "exemplars", "server_limits"):
        return parse_bool(setting, raw, source)
    raise AssertionError(setting)  # pragma: no cover - every field is handled above


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
