"""Reading a real Prometheus from a test: instant queries, and polling with a deadline."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.support.services import PrometheusServer

__all__ = ["poll", "poll_equal", "query", "server_values", "values_by"]


def poll(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll until `check` returns something truthy; the deadline is a bound, not an assertion
    about time."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.5)
    return result


def poll_equal(what: str, read: Callable[[], Any], expected: Any, timeout: float = 60) -> list[Any]:
    """Poll until `read()` returns `expected`; fail naming the last value read. Returns every
    distinct value read on the way, in order (for asserting what a series went through)."""
    seen: list[Any] = []

    def check() -> bool:
        value = read()
        if not seen or seen[-1] != value:
            seen.append(value)
        return bool(value == expected)

    try:
        poll(what, check, timeout)
    except AssertionError:
        raise AssertionError(f"never saw {what}: expected {expected!r}, last read {seen[-1]!r}"
                             ) from None
    return seen


def query(server: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    url = f"{server.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def values_by(server: PrometheusServer, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
    """An instant query's result as {(value of each of `labels`, ...): value}."""
    return {tuple(s["metric"].get(label, "") for label in labels): float(s["value"][1])
            for s in query(server, expr)}


def server_values(server: PrometheusServer, expr: str) -> dict[tuple[str, ...], float]:
    """A per-server result as {(server_address, server_port): value}."""
    return values_by(server, expr, "server_address", "server_port")
