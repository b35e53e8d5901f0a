"""``application_name=`` for psycopg_pool pools: the rule of
:mod:`poolwatch.sources.sqlalchemy.application_name`, through the pool's public ``kwargs``.

psycopg_pool reads ``pool.conninfo`` and ``pool.kwargs`` each time it opens a connection, and
documents changing them for the connections to come; a ``configure`` callback runs after the
connection is made, too late for a startup parameter. So ``instrument()`` gives the pool a copy
of its ``kwargs`` with ``application_name`` added (the application's own dict is not changed,
and the pool's other connections keep theirs), unless the application set one: in the conninfo,
in ``kwargs``, or in libpq's ``PGAPPNAME``. A conninfo or ``kwargs`` given as a callable is not
called (it may fetch credentials), so poolwatch cannot tell: it leaves such a pool's name alone
and says so once. Connections already open keep the name they have. ``uninstrument()`` gives the
pool back its own ``kwargs``.
"""

from __future__ import annotations

import os
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from poolwatch.core.errors import logger

__all__ = ["NamedKwargs", "set_application_name"]

_KEY = "application_name"


def _already_named(pool: Any) -> bool | None:
    """Whether the application named the pool's connections; None when poolwatch cannot tell
    without calling the application's code."""
    if os.environ.get("PGAPPNAME"):
        return True
    conninfo, kwargs = pool.conninfo, pool.kwargs
    if callable(conninfo) or callable(kwargs):
        return None
    if isinstance(kwargs, dict) and _KEY in kwargs:
        return True
    try:
        return _KEY in conninfo_to_dict(conninfo or "")
    except Exception:
        return True  # a conninfo libpq refuses anyway: left as it is


class NamedKwargs:
    """The pool's ``kwargs`` as poolwatch set them, and how to give them back."""

    def __init__(self, pool: Any, name: str) -> None:
        self.name = name
        self.original: dict[str, Any] | None = pool.kwargs
        self.ours: dict[str, Any] = {**(pool.kwargs or {}), _KEY: name}
        pool.kwargs = self.ours

    def restore(self, pool: Any) -> None:
        if pool.kwargs is not self.ours:
            return  # replaced by the application since: its own now
        rest = dict(self.ours)
        if rest.get(_KEY) == self.name:
            del rest[_KEY]
        if rest == (self.original or {}):
            pool.kwargs = self.original
        else:
            pool.kwargs = rest  # changed through pool.kwargs since: those changes stay


def set_application_name(pool: Any, pool_name: str, name: str) -> NamedKwargs | None:
    """Name the pool's new connections ``name`` unless the application named them."""
    named = _already_named(pool)
    if named is None:
        logger.warning(
            "poolwatch: pool %r: application_name is not set on its connections, because its "
            "conninfo or kwargs is a callable, which poolwatch does not call (return "
            "application_name from it to name the connections)",
            pool_name,
        )
        return None
    if named:
        return None
    return NamedKwargs(pool, name)
