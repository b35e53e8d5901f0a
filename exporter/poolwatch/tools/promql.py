"""A small client for Prometheus' HTTP query API (``/api/v1/query``) on urllib, and the helpers
that put a user's ``--selector`` and ``--window`` into PromQL."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from .scrape import describe_error

__all__ = [
    "Prometheus",
    "PrometheusError",
    "Series",
    "explain",
    "format_duration",
    "parse_duration",
    "selector_matchers",
]


class PrometheusError(Exception):
    """The data could not be read: Prometheus unreachable, or it rejected the query. The message
    is one line, fit for the terminal."""


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    value: float


_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?"
                       r"(?:(\d+)ms)?$")  # fmt: skip
_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


def parse_duration(text: str) -> float:
    """A Prometheus duration (``30s``, ``1h``, ``1h30m``) in seconds; ValueError otherwise."""
    m = _DURATION.match(text.strip())
    if not text.strip() or m is None or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration (e.g. 30s, 15m, 1h, 1h30m)")
    seconds = sum(int(g) * unit for g, unit in zip(m.groups(), _UNITS, strict=True) if g)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as a PromQL duration, in whole milliseconds (at least 1ms)."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def selector_matchers(selector: str | None) -> str:
    """The matchers inside ``{...}`` (braces optional), to be joined with others; ``""`` for none.
    Only the shape is checked here; Prometheus judges the matchers themselves."""
    text = (selector or "").strip()
    if text.startswith("{") or text.endswith("}"):
        if not (text.startswith("{") and text.endswith("}")):
            raise ValueError(f"{selector!r} is not a label selector (expected {{label=\"value\"}})")
        text = text[1:-1].strip()
    if "{" in text or "}" in text:
        raise ValueError(f"{selector!r} is not a label selector (expected {{label=\"value\"}})")
    return text.rstrip(",").strip()


_POSITION = re.compile(r'^(?:invalid parameter "query": )?\d+:\d+: ')


def explain(error: PrometheusError, selector: str | None) -> str:
    """The error as one line for the user: a parse error in a query that carries the user's
    selector is the selector's fault (its position in the composed query would only confuse)."""
    text = str(error)
    if selector and "parse error" in text:
        return f"--selector {selector!r} is not a valid label selector: {_POSITION.sub('', text)}"
    return text


class Prometheus:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _post(self, path: str, params: dict[str, str]) -> Any:
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers={"User-Agent": "poolwatch"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as e:
            try:  # 400 and 422 carry Prometheus' own explanation
                body = json.load(e)
            except Exception:
                raise PrometheusError(
                    f"{self.url} is not a Prometheus API ({describe_error(e)})"
                ) from None
        except ValueError:
            raise PrometheusError(f"{self.url} is not a Prometheus API (no JSON)") from None
        except Exception as e:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {describe_error(e)}"
                                  ) from None  # fmt: skip
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error", body) if isinstance(body, dict) else body
            raise PrometheusError(" ".join(str(error).split()))
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[Series]:
        """An instant query; a vector result as series, a scalar as one series without labels."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._post("/api/v1/query", params)
        kind, result = data.get("resultType"), data.get("result")
        if kind == "vector":
            return [Series(dict(r["metric"]), float(r["value"][1])) for r in result]
        if kind == "scalar":
            return [Series({}, float(result[1]))]
        raise PrometheusError(f"unexpected {kind} result for {expr}")
