"""A Celery app for the prefork tests: the engine made and instrumented at import, in the main
process, before the pool forks (as most Celery apps do), and poolwatch's one line."""

from __future__ import annotations

import os

import sqlalchemy
from celery import Celery

import poolwatch
import poolwatch.celery

PROBE = "SELECT 1 FROM pg_database LIMIT 1"

app = Celery("pwtest", broker=os.environ["PW_BROKER"])
app.conf.task_default_queue = os.environ["PW_QUEUE"]
app.conf.worker_hijack_root_logger = False

engine = sqlalchemy.create_engine(os.environ["POOLWATCH_TEST_PG"], pool_size=5, max_overflow=0)
poolwatch.instrument(engine, name=os.environ["PW_POOL_NAME"])


@app.task(name="pw.hold")
def hold(key: int) -> int:
    with engine.connect() as c:
        c.exec_driver_sql(f"SET application_name = '{os.environ['PW_APP']}-{os.getpid()}'")
        c.exec_driver_sql(f"SELECT pg_advisory_lock_shared({int(key)})")
        c.exec_driver_sql(f"SELECT pg_advisory_unlock_shared({int(key)})")
    return os.getpid()


@app.task(name="pw.query")
def query() -> int:
    with engine.connect() as c:
        c.exec_driver_sql(PROBE)
    return os.getpid()
