"""When a pool reads its server's connection limit, and what happens when it cannot.

The read happens on a connection the pool is opening anyway (a source calls :meth:`maybe_read`,
or for an async connection awaits :meth:`maybe_read_async`, from its "connection opened" hook),
at most once per :data:`INTERVAL` per pool so that a failover to a server with other limits is
followed; never on a checkout that reuses a connection. A failed
read leaves the series absent and is logged once with the error's type (never its message, which
can name the user or the database).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from poolwatch.core.errors import logger
from poolwatch.core.state import PoolState

__all__ = ["INTERVAL", "ServerLimits", "ServerProbe"]

INTERVAL = 300.0
"""Seconds between two reads of one pool's server limits."""


@dataclass(frozen=True)
class ServerLimits:
    """What the server says, setting by setting (only those that apply: a role or database
    without a ``CONNECTION LIMIT``, or ``max_user_connections`` = 0, is left out)."""

    settings: Mapping[str, int]

    @property
    def allowed(self) -> int:
        """Connections the server allows this pool's role: the smallest of what applies."""
        s = self.settings
        allowed = (
            s["max_connections"]
            - s.get("superuser_reserved_connections", 0)
            - s.get("reserved_connections", 0)
        )
        for limit in ("role_connection_limit", "database_connection_limit", "max_user_connections"):
            if limit in s:
                allowed = min(allowed, s[limit])
        return max(allowed, 0)


class ServerProbe:
    def __init__(
        self,
        state: PoolState,
        db_system: str,
        server: str,
        read: Callable[[Any, str], ServerLimits | None],
        read_async: Callable[[Any, str], Awaitable[ServerLimits | None]] | None = None,
    ) -> None:
        self.state = state
        self.db_system = db_system
        self.server = server
        """``host:port/database`` as the pool addresses it (for the log line)."""
        self._read = read
        self._read_async = read_async
        self._next = 0.0
        self._lock = threading.Lock()
        self._failed_logged = False
        self._announced = False

    def due(self) -> bool:
        """Whether to read now; claims the read (another thread opening a connection at the
        same moment does not read too)."""
        now = time.monotonic()
        if now < self._next:
            return False
        with self._lock:
            if now < self._next:
                return False
            self._next = now + INTERVAL
            return True

    def maybe_read(self, dbapi_connection: Any) -> None:
        """Read the limits on ``dbapi_connection`` if due. Never raises."""
        if not self.due():
            return
        try:
            limits = self._read(dbapi_connection, self.db_system)
        except Exception as e:
            self._failed(e)
            return
        self._store(limits)

    async def maybe_read_async(self, connection: Any) -> None:
        """:meth:`maybe_read` on an async connection (awaited on its event loop). Never raises,
        except a cancellation."""
        if self._read_async is None or not self.due():
            return
        try:
            limits = await self._read_async(connection, self.db_system)
        except Exception as e:
            self._failed(e)
            return
        self._store(limits)

    def _failed(self, error: Exception) -> None:
        self.state.server_limits = None
        if not self._failed_logged:
            self._failed_logged = True
            logger.warning(
                "poolwatch: pool %r could not read the server's connection limits (%s); "
                "poolwatch_server_connections_max is absent for it (a pooler in between, a "
                "role without access to pg_roles/pg_database, a read-only replica can cause "
                "this; server_limits=False turns the read off)",
                self.state.name,
                type(error).__name__,
            )

    def _store(self, limits: ServerLimits | None) -> None:
        self.state.server_limits = limits
        if limits is not None and not self._announced:
            self._announced = True
            most = self.state.limits().max
            logger.info(
                "poolwatch: pool %r may open %s connections; %s allows %d for this pool's role",
                self.state.name,
                most if most is not None else "unbounded",
                self.server,
                limits.allowed,
            )
