"""Celery tasks on an instrumented engine; one scrape shows every worker process's pools.

    POOLWATCH_PORT=9464 DATABASE_URL=postgresql+psycopg://app@db/orders celery -A tasks worker -c 4

``import poolwatch.celery``, the one line in the module that defines the app (Celery's main
process imports it before it forks the pool), writes each pool process's series into
prometheus_client's multiprocess files, and the main process serves the sum of all of them on
``POOLWATCH_PORT``: one target to scrape, whatever the concurrency (README, "Pre-fork servers").
A pool's connections must not cross a fork: each pool process creates its engine when it starts
(``worker_process_init``) and instruments it there.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from sqlalchemy import Engine, create_engine, text

import poolwatch
import poolwatch.celery  # the one line

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
    poolwatch.instrument(engine, name="orders-worker")


@app.task(name="orders.server_connections")
def server_connections() -> int:
    assert engine is not None, "the engine is created in each worker process"
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM pg_stat_activity")).scalar_one())
