"""Every private SQLAlchemy API poolwatch uses, in one place, each with its public fallback.

:func:`check` runs once per process at the first ``instrument()`` of an engine and logs one
WARNING per private API this SQLAlchemy lacks, naming the fallback in use. CI also runs the core
tests against the newest SQLAlchemy on PyPI, pre-releases included (scripts/test), so a change
there is seen before users see it.

- ``Pool._return_conn``: the checkin seam (no event dispatch per checkin); else the ``checkin``
  event.
- ``_ConnectionFairy._connection_record``: the key of a checkout, read by the hot path; no
  fallback: ``instrument()`` refuses, naming the versions supported.
- ``QueuePool._pool.queue``: idle connections opened before ``instrument()``; else they are
  counted once used.
- ``QueuePool._max_overflow``, ``Pool._recycle``, ``Pool._pre_ping``: ``poolwatch_pool_info`` and
  ``db_client_connection_max``; else absent (unknown).
- ``Connection._allow_autobegin``: tells the dialect's first-connect set-up apart (no statement
  spans for it); else spans for it too.
"""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy
from sqlalchemy.pool import Pool, QueuePool
from sqlalchemy.pool.base import _ConnectionFairy

from poolwatch.core.errors import logger

__all__ = [
    "RETURN_SEAM",
    "SUPPORTED",
    "autobegin_allowed",
    "check",
    "has_return_seam",
    "idle_records",
    "private",
]

SUPPORTED = "SQLAlchemy 2.0 and 2.1"
RETURN_SEAM = "_return_conn"

_lock = threading.Lock()
_checked = False


def check() -> None:
    """Look for each private API once; warn for each one missing. Raises ``TypeError`` if the
    one without a fallback is missing."""
    global _checked
    with _lock:
        if _checked:
            return
        _checked = True
    if not hasattr(_ConnectionFairy, "_connection_record"):
        raise TypeError(
            f"poolwatch: SQLAlchemy {sqlalchemy.__version__} has no "
            f"_ConnectionFairy._connection_record; poolwatch supports {SUPPORTED}"
        )
    missing = {
        "Pool._return_conn": (hasattr(Pool, RETURN_SEAM), "the checkin event"),
        "QueuePool._max_overflow": (
            "_max_overflow" in QueuePool.__init__.__code__.co_names,
            "db_client_connection_max absent",
        ),
    }
    for name, (present, fallback) in missing.items():
        if not present:
            logger.warning(
                "poolwatch: SQLAlchemy %s has no %s; using %s instead (poolwatch supports %s)",
                sqlalchemy.__version__, name, fallback, SUPPORTED,
            )  # fmt: skip


def has_return_seam(pool: Pool) -> bool:
    return callable(getattr(pool, RETURN_SEAM, None))


def idle_records(pool: Pool) -> list[Any]:
    """The records in the pool's queue that hold an open connection (QueuePool; else none)."""
    queue = getattr(getattr(pool, "_pool", None), "queue", None)
    if queue is None:
        return []
    return [r for r in list(queue) if getattr(r, "dbapi_connection", None) is not None]


def private(pool: Pool, name: str) -> Any:
    """A private setting of the pool (``_recycle``, ``_pre_ping``, ``_max_overflow``), or None."""
    return getattr(pool, name, None)


def autobegin_allowed(connection: Any) -> bool:
    """False while the dialect runs its first-connect set-up on an events-off Connection."""
    return bool(getattr(connection, "_allow_autobegin", True))
