"""The database server's own connection ceiling, read over a DB-API connection.

PostgreSQL: ``max_connections`` less ``superuser_reserved_connections`` and
``reserved_connections`` (16+), or the role's or the database's ``CONNECTION LIMIT`` if smaller.
MySQL and MariaDB: ``max_connections``, or ``max_user_connections`` if set and smaller. Other
databases: nothing (the series is absent, never wrong). One round trip, in its own transaction,
rolled back, so the connection is handed on as it was. :func:`read_server_limits_async` is the
same over a connection whose cursor methods and ``rollback`` are coroutines (psycopg's
``AsyncConnection``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from poolwatch.core.server_probe import ServerLimits

__all__ = ["QUERIES", "read_server_limits", "read_server_limits_async"]

QUERIES: Mapping[str, str] = {
    "postgresql": (
        "SELECT current_setting('max_connections')::int,"
        " current_setting('superuser_reserved_connections')::int,"
        " nullif(current_setting('reserved_connections', true), '')::int,"
        " (SELECT rolconnlimit FROM pg_catalog.pg_roles WHERE rolname = current_user),"
        " (SELECT datconnlimit FROM pg_catalog.pg_database WHERE datname = current_database())"
    ),
    "mysql": "SELECT @@max_connections, @@max_user_connections",
    "mariadb": "SELECT @@max_connections, @@max_user_connections",
}
_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "postgresql": (
        "max_connections",
        "superuser_reserved_connections",
        "reserved_connections",
        "role_connection_limit",
        "database_connection_limit",
    ),
    "mysql": ("max_connections", "max_user_connections"),
    "mariadb": ("max_connections", "max_user_connections"),
}


def _applies(setting: str, value: int) -> bool:
    if setting in ("role_connection_limit", "database_connection_limit"):
        return value >= 0  # -1: no limit
    if setting == "max_user_connections":
        return value > 0  # 0: no limit
    return True


def read_server_limits(dbapi_connection: Any, db_system: str) -> ServerLimits | None:
    """The limits, or None for a database poolwatch cannot ask. Raises what the driver raises
    (the caller logs the error's type, never its message)."""
    query = QUERIES.get(db_system)
    if query is None:
        return None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(query)
        row = cursor.fetchone()
    finally:
        try:
            cursor.close()
        finally:
            dbapi_connection.rollback()
    return _limits(db_system, row)


async def read_server_limits_async(connection: Any, db_system: str) -> ServerLimits | None:
    """:func:`read_server_limits` over an async connection."""
    query = QUERIES.get(db_system)
    if query is None:
        return None
    cursor = connection.cursor()
    try:
        await cursor.execute(query)
        row = await cursor.fetchone()
    finally:
        try:
            await cursor.close()
        finally:
            await connection.rollback()
    return _limits(db_system, row)


def _limits(db_system: str, row: Any) -> ServerLimits | None:
    if row is None:
        return None
    settings = {
        name: int(value)
        for name, value in zip(_COLUMNS[db_system], row, strict=True)
        if value is not None and _applies(name, int(value))
    }
    if "max_connections" not in settings:
        return None
    return ServerLimits(settings)
