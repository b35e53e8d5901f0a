"""The service's view: every process's files, with the dead ones swept first."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from poolwatch.backends.multiprocess.files import directory, locked, merge, sweep

__all__ = ["ServiceCollector", "service_registry"]


class ServiceCollector(MultiProcessCollector):
    """prometheus_client's ``MultiProcessCollector``, which also checks at every collection that
    each process whose files it reads is alive: a worker killed with ``kill -9`` (no exit hook
    ran) drops out of the live gauges at the next scrape and its counts move to the archive.
    Reads under the sweep lock's shared side (see :mod:`poolwatch.backends.multiprocess.files`).
    """

    def __init__(self, registry: CollectorRegistry | None, path: str | None = None) -> None:
        super().__init__(registry, path or directory())  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        path: str = self._path
        sweep(path)
        with locked(path, exclusive=False):
            files = glob.glob(os.path.join(path, "*.db"))
            return list(merge(files, accumulate=True))


def service_registry(path: str | None = None) -> CollectorRegistry:
    """A registry holding only the :class:`ServiceCollector`: what a multiprocess ``/metrics``
    serves (prometheus_client's rule: never the default registry in multiprocess mode)."""
    registry = CollectorRegistry()
    ServiceCollector(registry, path)
    return registry
