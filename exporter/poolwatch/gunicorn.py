"""gunicorn: one scrape shows every worker's pools.

As the whole configuration::

    gunicorn -c python:poolwatch.gunicorn app:app

or in your own ``gunicorn.conf.py``, one line::

    from poolwatch.gunicorn import *

Importing this module (gunicorn does, in the master, before any worker exists) sets
``PROMETHEUS_MULTIPROC_DIR`` to a private directory if it is not set (removed at exit), so every
worker's ``instrument()`` writes prometheus_client's multiprocess files. With ``POOLWATCH_PORT``,
the master serves the aggregated ``/metrics`` of all workers, once, on that port; no worker does.
When a worker exits (``kill -9`` included), its live gauges go and its counts are merged into
the archive. If your configuration defines one of these hooks itself, call this module's from
yours (``poolwatch.gunicorn.child_exit(server, worker)``).
"""

from __future__ import annotations

from typing import Any

from poolwatch.backends.multiprocess import service

__all__ = ["child_exit", "on_exit", "when_ready", "worker_exit"]

service.prepare_master()


def when_ready(server: Any) -> None:
    """Master, listening sockets bound, before the first worker: serve the aggregated view."""
    service.serve_from_master()


def child_exit(server: Any, worker: Any) -> None:
    """Master, after a worker exited for any reason."""
    service.worker_exited(worker.pid)


def worker_exit(server: Any, worker: Any) -> None:
    """Worker, just before it exits: its last counts."""
    service.flush_now()


def on_exit(server: Any) -> None:
    """Master, at shutdown."""
    service.stop_master()
