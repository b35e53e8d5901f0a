"""SQLAlchemy on top of a psycopg_pool: ``creator=pool.getconn`` and SQLAlchemy's ``NullPool``.

For an application that already has a ``psycopg_pool.ConnectionPool`` (shared with code that
uses psycopg directly) and wants SQLAlchemy to borrow from it instead of keeping a second pool.
``close_returns=True`` makes ``close()`` hand a connection back to the psycopg pool, which is
what ``NullPool`` calls when SQLAlchemy is done with it.

poolwatch sees both sides. The engine (``orders``): every checkout calls ``creator`` (so
``db_client_connection_create_time_seconds`` counts borrowings from the psycopg pool, and
measures how long each took), statements, hold times, errors; ``NullPool`` has no limit, so it
has no ``db_client_connection_max``. The psycopg pool (``orders-psycopg``, its own ``name=``):
the true limit (``max_size``), the waits inside ``getconn``, its ``PoolTimeout``s. It is
instrumented before ``pool.getconn`` is handed to ``create_engine``, so the creator is
poolwatch's wrapper (a method bound earlier would bypass it; poolwatch says so in the log).
Statements are timed on both names; ``statement_metrics=False`` on one of them counts them once.
"""

from __future__ import annotations

import os

from psycopg_pool import ConnectionPool
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import poolwatch

conninfo = os.environ.get("DATABASE_CONNINFO", "postgresql://postgres@127.0.0.1/postgres")
pg_pool = ConnectionPool(
    conninfo, min_size=1, max_size=4, timeout=10, close_returns=True, open=True,
    name="orders-psycopg",
)  # fmt: skip
poolwatch.instrument(pg_pool, statement_metrics=False)  # the engine times the statements
engine = create_engine("postgresql+psycopg://", creator=pg_pool.getconn, poolclass=NullPool)
poolwatch.instrument(engine, name="orders")


def server_connections() -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM pg_stat_activity")).scalar_one())


def close() -> None:
    engine.dispose()
    pg_pool.close()
