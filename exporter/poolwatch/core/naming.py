"""Pool names: the semantic conventions' ``host:port/database`` fallback, unique per process."""

from __future__ import annotations

import threading
from collections.abc import Callable

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
    """Names in use in this process, per metrics registry, each with its holder.

    An explicit ``name=`` that is taken is a configuration error. A derived name that is taken
    (two engines on one URL) gets a ``#2`` suffix instead of failing, because the engines may be
    created by library code the application does not control. A name whose holder no longer
    holds it (``holds()`` false: its pool is gone or disposed) is free again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: dict[tuple[int, str], Callable[[], bool]] = {}

    def _free(self, key: tuple[int, str]) -> bool:
        holds = self._taken.get(key)
        return holds is None or not holds()

    def free(self, scope: int, name: str) -> bool:
        with self._lock:
            return self._free((scope, name))

    def claim(self, scope: int, name: str, holds: Callable[[], bool], *, explicit: bool) -> str:
        """Take ``name`` for a holder that keeps it while ``holds()`` is true."""
        with self._lock:
            if self._free((scope, name)):
                self._taken[(scope, name)] = holds
                return name
            if explicit:
                raise ValueError(
                    f"poolwatch: name={name!r} is already used by another instrumented pool in "
                    "this process; name accepts a string unique per process (e.g. 'orders-primary'"
                    " and 'orders-replica')"
                )
            n = 2
            while not self._free((scope, f"{name}#{n}")):
                n += 1
            unique = f"{name}#{n}"
            self._taken[(scope, unique)] = holds
            return unique

    def release(self, scope: int, name: str, holds: Callable[[], bool] | None = None) -> None:
        """Give ``name`` back (only if ``holds`` is still its holder, when given)."""
        with self._lock:
            # ``==``, not ``is``: a bound method (``inst._holds``) is a new object at every
            # access, and equal to another one of the same method of the same object.
            if holds is None or self._taken.get((scope, name)) == holds:
                self._taken.pop((scope, name), None)
