"""Everything poolwatch reads of psycopg_pool that is not its public API, in one place.

psycopg_pool has no hook for "a connection was opened" (``configure`` is a constructor argument,
kept privately, and says nothing about how long the connect took or whether it failed), and no
public list of its idle connections. Each private name used is looked up here, with a fallback
when a version lacks it and a warning logged once per seam.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from poolwatch.core.errors import logger

__all__ = [
    "CONNECT_SEAM",
    "SUPPORTED",
    "check_version",
    "connect_seam",
    "explicit_name",
    "idle_connections",
    "pool_lock",
]

SUPPORTED = ">=3.2,<3.4"
"""The psycopg_pool versions poolwatch supports (3.3.3 is the one CI tests)."""
_LOWEST, _BEYOND = (3, 2), (3, 4)

CONNECT_SEAM = "_connect"
"""The pool method that opens every new connection (``configure`` included), in the workers and,
for the null pools, in ``getconn``: psycopg_pool 3.1 to 3.3."""

_warned: set[str] = set()
_warned_lock = threading.Lock()
# psycopg_pool names an unnamed pool "pool-<n>" (BasePool.__init__).
_GENERATED_NAME = re.compile(r"pool-[0-9]+")


def _warn_once(seam: str, message: str, *args: object) -> None:
    with _warned_lock:
        if seam in _warned:
            return
        _warned.add(seam)
    logger.warning(message, *args)


def _parse(version: str) -> tuple[int, int] | None:
    match = re.match(r"([0-9]+)\.([0-9]+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_version(version: str) -> None:
    """Raise if poolwatch does not support this psycopg_pool version."""
    parsed = _parse(version)
    if parsed is None or not _LOWEST <= parsed < _BEYOND:
        raise RuntimeError(
            f"poolwatch: psycopg_pool {version} is not supported; poolwatch instruments "
            f"psycopg_pool {SUPPORTED} (install a supported version, or leave this pool "
            "uninstrumented)"
        )


def connect_seam(pool: Any) -> Callable[..., Any] | None:
    """The pool's ``_connect``, or None (logged once) on a version without it."""
    method: Callable[..., Any] | None = getattr(pool, CONNECT_SEAM, None)
    if callable(method):
        return method
    _warn_once(
        CONNECT_SEAM,
        "poolwatch: this psycopg_pool has no %s(); connection create times and connection "
        "errors are not recorded, and connections are counted once they have been checked out",
        CONNECT_SEAM,
    )
    return None


def idle_connections(pool: Any) -> list[Any]:
    """The connections waiting in the pool now (its ``_pool`` deque), or [] (logged once)."""
    queue = getattr(pool, "_pool", None)
    try:
        return list(queue) if queue is not None else _no_idle()
    except TypeError:
        return _no_idle()


def _no_idle() -> list[Any]:
    _warn_once(
        "_pool",
        "poolwatch: cannot read the idle connections of this psycopg_pool; the ones opened "
        "before instrument() are counted once they have been checked out",
    )
    return []


def pool_lock(pool: Any) -> Any:
    """The lock a sync pool holds while it hands out, takes back, opens or closes connections
    (its ``_lock``), or None (logged once)."""
    lock = getattr(pool, "_lock", None)
    if hasattr(lock, "acquire") and hasattr(lock, "release"):
        return lock
    _warn_once(
        "_lock",
        "poolwatch: cannot read the lock of this psycopg_pool; a pool instrumented while it had "
        "connections out or opening keeps checking each checked-out connection for one no seam "
        "saw opening",
    )
    return None


def explicit_name(pool: Any) -> str | None:
    """The pool's ``name=`` if the application gave one, None for psycopg_pool's own
    ``pool-<n>``."""
    name = getattr(pool, "name", None)
    if not isinstance(name, str) or not name or _GENERATED_NAME.fullmatch(name):
        return None
    return name
