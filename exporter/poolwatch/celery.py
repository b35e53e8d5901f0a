"""Celery's prefork pool: one scrape shows every worker process's pools.

One line in the module that defines your Celery app (the main worker process imports it before
it forks the pool)::

    import poolwatch.celery

``PROMETHEUS_MULTIPROC_DIR`` is set to a private directory if it is not set (removed when the
worker stops); with ``POOLWATCH_PORT``, the main process serves the aggregated ``/metrics`` of
all pool processes once, on that port. A pool process writes its last counts when it exits
(``worker_process_shutdown``); one that is killed drops out of the gauges at the next scrape
(poolwatch checks at every scrape that each process is alive, as Celery has no hook for it).
Instrument your engine at import or in ``worker_process_init``: either way each pool process's
pools are its own.
"""

from __future__ import annotations

from typing import Any

from celery import signals

from poolwatch.backends.multiprocess import service

__all__: list[str] = []

service.prepare_master()


def _worker_init(**_: Any) -> None:
    service.serve_from_master()


def _worker_process_shutdown(**_: Any) -> None:
    service.flush_now()


def _worker_shutdown(**_: Any) -> None:
    service.stop_master()


signals.worker_init.connect(_worker_init, weak=False)
signals.worker_process_shutdown.connect(_worker_process_shutdown, weak=False)
signals.worker_shutdown.connect(_worker_shutdown, weak=False)
