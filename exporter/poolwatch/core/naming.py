"""Pool names: the semantic conventions' ``host:port/database`` fallback, unique per process."""

from __future__ import annotations

import threading

__all__ = ["DEFAULT_PORTS", "NameRegistry", "db_system_name", "semconv_pool_name"]

DEFAULT_PORTS = {
    "postgresql": 5432,
    "mysql": 3306,
    "mariadb": 3306,
    "mssql": 1433,
    "oracle": 1521,
}

# Database (SQLAlchemy dialect) name -> OpenTelemetry ``db.system.name``.
_DB_SYSTEMS = {
    "postgresql": "postgresql",
    "sqlite": "sqlite",
    "mysql": "mysql",
    "mariadb": "mariadb",
    "mssql": "microsoft.sql_server",
    "oracle": "oracle.db",
}


def db_system_name(dialect_name: str) -> str:
    return _DB_SYSTEMS.get(dialect_name, "other_sql")


def semconv_pool_name(
    backend: str, host: str | None, port: int | None, database: str | None
) -> str:
    """``host:port/database``, the semantic conventions' fallback pool name (``backend`` is the
    database kind, e.g. ``postgresql``); never the user name or the password."""
    database = database or ""
    if host:
        port = port or DEFAULT_PORTS.get(backend)
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{port}/{database}" if port else f"{shown}/{database}"
    if backend == "sqlite":
        return f"sqlite:{database or ':memory:'}"
    return f"{backend}/{database}" if database else backend


class NameRegistry:
    """Names in use in this process, per metrics registry.

    An explicit ``name=`` that is taken is a configuration error. A derived name that is taken
    (two engines on one URL) gets a ``#2`` suffix instead of failing, because the engines may be
    created by library code the application does not control.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: set[tuple[int, str]] = set()

    def claim(self, scope: int, name: str, *, explicit: bool) -> str:
        with self._lock:
            if (scope, name) not in self._taken:
                self._taken.add((scope, name))
                return name
            if explicit:
                raise ValueError(
                    f"poolwatch: name={name!r} is already used by another instrumented pool in "
                    "this process; name accepts a string unique per process (e.g. 'orders-primary'"
                    " and 'orders-replica')"
                )
            n = 2
            while (scope, f"{name}#{n}") in self._taken:
                n += 1
            unique = f"{name}#{n}"
            self._taken.add((scope, unique))
            return unique

    def release(self, scope: int, name: str) -> None:
        with self._lock:
            self._taken.discard((scope, name))
