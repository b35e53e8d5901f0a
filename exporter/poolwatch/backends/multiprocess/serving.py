"""Serving the service's aggregated ``/metrics`` once, on ``POOLWATCH_PORT``.

Under a server with a master process that poolwatch hooks into (gunicorn, Celery), the master
serves (:func:`serve_service`) and says so to its workers through
:data:`SERVED_BY_MASTER` in the environment they inherit, so that no worker tries. Under a server
without such a hook (``uvicorn --workers``, whose workers are spawned), every worker asks for the
port and one gets it; the others retry from the sampler, so when the one serving dies another
takes over within :data:`RETRY_SECONDS`. Every answer is the same whoever serves it: it is read
from the files of all processes.
"""

from __future__ import annotations

import os
import threading

from poolwatch.backends.multiprocess.collector import service_registry
from poolwatch.backends.prometheus.exposition import MetricsServer, serve
from poolwatch.core import lifecycle
from poolwatch.core.errors import logger
from poolwatch.core.sampler import Job, sampler

__all__ = ["RETRY_SECONDS", "SERVED_BY_MASTER", "serve_from_a_worker", "serve_service"]

SERVED_BY_MASTER = "POOLWATCH_SERVED_BY_MASTER"
"""Set (to the master's pid) by a master that serves the aggregated view itself."""
RETRY_SECONDS = 5.0

_lock = threading.Lock()
_server: MetricsServer | None = None
_job: Job | None = None


def serve_service(addr: str, port: int, path: str | None = None) -> MetricsServer:
    """Serve every process's series from a daemon thread; raises ``OSError`` if taken."""
    server = serve(addr, port, service_registry(path))
    logger.info(
        "poolwatch: serving the service's Prometheus metrics (all processes) on "
        "http://%s:%d/metrics", addr, port,
    )  # fmt: skip
    return server


def serve_from_a_worker(addr: str, port: int) -> None:
    """In a worker of a server poolwatch has no master hook for: serve if the port is free,
    else try again from the sampler (another worker serves meanwhile)."""
    global _job
    if os.environ.get(SERVED_BY_MASTER):
        return
    with _lock:
        if _server is not None or _job is not None:
            return
        _job = Job("multiprocess_http", lambda _now: _try(addr, port), lambda: RETRY_SECONDS)
    sampler.add(_job)


def _try(addr: str, port: int) -> None:
    global _server, _job
    with _lock:
        if _server is not None:
            return
        try:
            _server = serve_service(addr, port)
        except OSError:
            return  # another worker serves; retried
        job, _job = _job, None
    if job is not None:
        sampler.remove(job)


def _after_fork_in_child() -> None:
    global _server, _job, _lock
    _lock = threading.Lock()
    if _server is not None:
        _server.close_inherited()
    _server = None
    _job = None


lifecycle.after_fork_in_child(_after_fork_in_child)
