"""Reading samples: a ``/metrics`` endpoint (Prometheus text or OpenMetrics), or any collection
of prometheus_client metric families (a registry's ``collect()``), into plain :class:`Sample` s;
and the bucket arithmetic the readers share."""

from __future__ import annotations

import gzip
import math
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families

__all__ = [
    "Read",
    "Sample",
    "bucket_quantile",
    "describe_error",
    "fetch",
    "fetch_all",
    "metrics_url",
    "registry_read",
    "samples_from_families",
]

ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


@dataclass(frozen=True)
class Sample:
    name: str  # the sample's own name: ``..._bucket``, ``..._total``
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Read:
    """One read of one target: its samples, or why there are none."""

    target: str  # as the user gave it
    instance: str  # host:port, as Prometheus would label it
    at: float  # time.time() of the read
    samples: tuple[Sample, ...] = ()
    error: str | None = None


def metrics_url(target: str) -> str:
    """``host:port`` or a URL without a path become ``http://host:port/metrics``."""
    if "://" not in target:
        target = "http://" + target
    parts = urllib.parse.urlsplit(target)
    if not parts.netloc:
        raise ValueError(f"not a metrics address: {target!r} (expected host:port or a URL)")
    path = parts.path if parts.path not in ("", "/") else "/metrics"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def describe_error(e: BaseException) -> str:
    """One line saying why a read failed, without a traceback."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        e = e.reason if isinstance(e.reason, BaseException) else e
        if isinstance(e, str):  # pragma: no cover - urllib gives a string reason rarely
            return e
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve host ({e.strerror})"
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:200]


def samples_from_families(families: Iterable[Any]) -> tuple[Sample, ...]:
    """prometheus_client ``Metric`` objects (parsed or collected) to samples."""
    out: list[Sample] = []
    for family in families:
        for s in family.samples:
            out.append(Sample(s.name, dict(s.labels), float(s.value)))
    return tuple(out)


def registry_read(registry: Any, target: str = "local", instance: str = "local") -> Read:
    """A read of an in-process prometheus_client registry (anything with ``collect()``), for a
    live view inside the application itself (the demo's)."""
    return Read(target, instance, time.time(), samples_from_families(registry.collect()))


def parse(body: str, content_type: str) -> tuple[Sample, ...]:
    if content_type.startswith("application/openmetrics-text"):
        return samples_from_families(openmetrics_families(body))  # type: ignore[no-untyped-call]
    return samples_from_families(text_families(body))


def fetch(target: str, timeout: float = 5.0) -> Read:
    """Read one endpoint; never raises for an unreachable or malformed target."""
    at = time.time()
    try:
        url = metrics_url(target)
    except ValueError as e:
        return Read(target, target, at, error=str(e))
    instance = urllib.parse.urlsplit(url).netloc
    request = urllib.request.Request(
        url, headers={"Accept": ACCEPT, "Accept-Encoding": "gzip", "User-Agent": "poolwatch-top"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            if response.headers.get("Content-Encoding", "") == "gzip":
                raw = gzip.decompress(raw)
            content_type = response.headers.get("Content-Type", "text/plain")
        samples = parse(raw.decode("utf-8"), content_type)
    except Exception as e:  # an unreachable or broken target is a row, never a crash
        return Read(target, instance, at, error=describe_error(e))
    return Read(target, instance, at, samples)


def fetch_all(targets: Sequence[str], timeout: float = 5.0) -> list[Read]:
    """Every target at once (one that does not answer costs ``timeout``, not one per target)."""
    if len(targets) <= 1:
        return [fetch(t, timeout) for t in targets]
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        return list(pool.map(lambda t: fetch(t, timeout), targets))


def bucket_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """``histogram_quantile`` over cumulative bucket counts ``{le: count}`` (``+Inf`` included),
    interpolating linearly inside the bucket as Prometheus does; None without observations.
    A rank in the ``+Inf`` bucket reads as the highest finite bound."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            inside = count - below
            return lower + (le - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = le, count
    return lower
