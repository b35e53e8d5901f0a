"""Ground truth for pool tests: what the registry says versus what the pool and the server say."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import QueuePool

POOL = "db_client_connection_pool_name"


class Reader:
    """``registry.get_sample_value`` for one pool, with 0 for nothing and ``None`` kept apart."""

    def __init__(self, registry: CollectorRegistry, pool: str) -> None:
        self.registry = registry
        self.pool = pool

    def get(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {POOL: self.pool, **labels})

    def __call__(self, name: str, **labels: str) -> float:
        return self.get(name, **labels) or 0.0

    @property
    def used(self) -> float | None:
        return self.get("db_client_connection_count", db_client_connection_state="used")

    @property
    def idle(self) -> float | None:
        return self.get("db_client_connection_count", db_client_connection_state="idle")

    @property
    def pending(self) -> float | None:
        return self.get("db_client_connection_pending_requests")

    def waits_at_least(self, seconds: float) -> float:
        """Observations in the wait histogram of at least ``seconds`` (a bucket boundary)."""
        return self("db_client_connection_wait_time_seconds_count") - self(
            "db_client_connection_wait_time_seconds_bucket", le=_le(seconds)
        )


def _le(seconds: float) -> str:
    return str(float(seconds))


def queue_truth(engine: Engine) -> tuple[int, int]:
    """(checked out, idle with an open connection), read from QueuePool's own internals."""
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    idle = sum(1 for rec in list(pool._pool.queue) if rec.dbapi_connection is not None)
    return pool.checkedout(), idle


def app_name() -> str:
    return "pw-" + uuid.uuid4().hex[:12]


def server_connections(observer_url: str, application_name: str) -> int:
    """Connections PostgreSQL itself has open for ``application_name``, once settled: a backend
    whose client has just closed leaves pg_stat_activity a moment later (its process exits on
    its own time), so the count is read until two reads 0.1 s apart agree (at most 3 s)."""
    eng = create_engine(observer_url, poolclass=__import__("sqlalchemy.pool").pool.NullPool)
    try:
        with eng.connect() as c:

            def read() -> int:
                return int(
                    c.execute(
                        text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"),
                        {"a": application_name},
                    ).scalar_one()
                )

            last = read()
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                time.sleep(0.1)
                c.rollback()  # a fresh snapshot: pg_stat_activity is fixed within a transaction
                now = read()
                if now == last:
                    return now
                last = now
            return last
    finally:
        eng.dispose()


@contextmanager
def engines() -> Iterator[Callable[..., Engine]]:
    """A factory of engines that are all disposed (and uninstrumented) at the end."""
    made: list[Engine] = []

    def make(url: str, **kwargs: Any) -> Engine:
        eng = create_engine(url, **kwargs)
        made.append(eng)
        return eng

    try:
        yield make
    finally:
        import poolwatch

        for eng in made:
            poolwatch.uninstrument(eng)
            eng.dispose()
