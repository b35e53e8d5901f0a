"""The cursor classes of a pool's connections, replaced by subclasses and given back.

Statement timing (:mod:`.statements`) and tracing (:mod:`.tracing`) both work the same way: each
connection's cursor factories (``cursor_factory``, ``server_cursor_factory``) become a subclass
of the class the connection already had, made once per class, and ``restore()`` gives every
connection its own classes back. What the subclass overrides is the caller's (``namespace``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["FACTORIES", "CursorClasses"]

FACTORIES = ("cursor_factory", "server_cursor_factory")
"""The connection attributes holding the cursor classes that run its statements."""


class CursorClasses:
    """``namespace(base)`` gives the overrides of a subclass of ``base``, or None to leave a
    class alone (not a psycopg cursor)."""

    def __init__(self, namespace: Callable[[type], dict[str, Any] | None]) -> None:
        self._namespace = namespace
        self._lock = threading.Lock()
        # The connection's own class -> the subclass; and back.
        self._derived: dict[type, type] = {}
        self._bases: dict[type, type] = {}
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def adopt(self, conn: Any) -> None:
        """Give ``conn`` the subclasses of its cursor classes (once: a subclass stays)."""
        for attribute in FACTORIES:
            factory = getattr(conn, attribute, None)
            if not isinstance(factory, type) or factory in self._bases:
                continue
            derived = self._derive(factory)
            if derived is not None:
                setattr(conn, attribute, derived)
                self._connections.add(conn)

    def restore(self) -> None:
        """Every adopted connection gets back the classes it had."""
        for conn in list(self._connections):
            for attribute in FACTORIES:
                base = self._bases.get(getattr(conn, attribute, None))  # type: ignore[arg-type]
                if base is not None:
                    setattr(conn, attribute, base)
        self._connections.clear()

    def _derive(self, base: type) -> type | None:
        with self._lock:
            derived = self._derived.get(base)
            if derived is not None:
                return derived
            namespace = self._namespace(base)
            if namespace is None:
                return None
            namespace.update(
                __slots__=(), __module__=base.__module__, __qualname__=base.__qualname__
            )
            derived = type(base.__name__, (base,), namespace)
            self._derived[base] = derived
            self._bases[derived] = base
            return derived
