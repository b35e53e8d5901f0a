"""SQLAlchemy on top of a psycopg_pool: ``creator=pool.getconn`` and SQLAlchemy's ``NullPool``.

For an application that already has a ``psycopg_pool.ConnectionPool`` (shared with code that
uses psycopg directly) and wants SQLAlchemy to borrow from it instead of keeping a second pool.
``close_returns=True`` makes ``close()`` hand a connection back to the psycopg pool, which is
what ``NullPool`` calls when SQLAlchemy is done with it.

What poolwatch sees here is SQLAlchemy's side: every checkout calls ``creator`` (so
``db_client_connection_create_time_seconds`` counts borrowings from the psycopg pool, and
measures how long each took), statements, hold times, errors. ``NullPool`` has no limit, so
there is no ``db_client_connection_max`` and no saturation: the true limit is the psycopg
pool's ``max_size``, and waiting happens inside ``getconn``. Instrumenting the psycopg_pool
itself gives those (issue #19).
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
engine = create_engine("postgresql+psycopg://", creator=pg_pool.getconn, poolclass=NullPool)
poolwatch.instrument(engine, name="orders")


def server_connections() -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM pg_stat_activity")).scalar_one())


def close() -> None:
    engine.dispose()
    pg_pool.close()
