"""psycopg_pool pools on the real PostgreSQL, and what the pool and the server say about them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import make_url

from tests.support.pools import server_connections


def conninfo(url: str) -> str:
    """A libpq conninfo for the SQLAlchemy URL of the test database."""
    u = make_url(url)
    parts = {"host": u.host, "port": u.port, "user": u.username, "password": u.password,
             "dbname": u.database}
    return " ".join(f"{k}={v}" for k, v in parts.items() if v)


def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait (bounded) for the pool's workers to reach a state; the assertion is the state."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def truth(pool: Any, observer_url: str, application_name: str) -> dict[str, int]:
    """What psycopg_pool's get_stats() and PostgreSQL's pg_stat_activity say now."""
    stats = pool.get_stats()
    return {
        "pool_size": stats["pool_size"],
        "pool_available": stats["pool_available"],
        "server": server_connections(observer_url, application_name),
    }


@contextmanager
def pools() -> Iterator[Callable[..., Any]]:
    """``make(cls, conninfo, **kwargs)``: pools uninstrumented and closed at the end."""
    made: list[Any] = []

    def make(cls: type, info: str, **kwargs: Any) -> Any:
        pool = cls(info, **kwargs)
        made.append(pool)
        return pool

    try:
        yield make
    finally:
        import poolwatch

        for pool in made:
            poolwatch.uninstrument(pool)
            if hasattr(pool, "__aenter__"):
                continue  # closed by the async test itself, inside its loop
            pool.close()
