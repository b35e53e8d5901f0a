"""Celery tasks on an instrumented engine; every worker process serves its own /metrics.

    DATABASE_URL=postgresql+psycopg://app@db/orders celery -A tasks worker --concurrency 4

Celery's prefork pool forks its worker processes, and a pool's connections must not cross a
fork: each worker process creates its engine when it starts (``worker_process_init``) and
instruments it there. Each serves ``/metrics`` on ``POOLWATCH_PORT_BASE`` plus its index
(9464, 9465, ... for ``--concurrency 4``): scrape them all. (A single endpoint for all
workers needs the multiprocess backend, coming with ``poolwatch.celery``, issue #15.)
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from celery.utils.log import current_process_index
from sqlalchemy import Engine, create_engine, text

import poolwatch

broker = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
app = Celery("orders", broker=broker, backend=os.environ.get("CELERY_RESULT_BACKEND", broker))
app.conf.task_default_queue = os.environ.get("CELERY_QUEUE", "orders")

engine: Engine | None = None


@worker_process_init.connect
def instrument_worker_process(**_: Any) -> None:
    global engine
    engine = create_engine(
        os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/postgres"),
        pool_size=2,
        max_overflow=0,
    )
    port = int(os.environ.get("POOLWATCH_PORT_BASE", "9464")) + (current_process_index(base=0) or 0)
    poolwatch.instrument(engine, name="orders-worker", port=port, addr="127.0.0.1")


@app.task(name="orders.server_connections")
def server_connections() -> int:
    assert engine is not None, "the engine is created in each worker process"
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM pg_stat_activity")).scalar_one())
