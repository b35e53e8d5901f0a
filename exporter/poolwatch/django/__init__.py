"""Django 5.1+: every database alias with ``OPTIONS["pool"]`` instrumented, under the alias's name.

One line in settings.py::

    INSTALLED_APPS = [..., "poolwatch.django"]

Django creates an alias's ``psycopg_pool.ConnectionPool`` lazily, in its ``DatabaseWrapper.pool``
property, the first time a connection is needed, and again after ``close_pool()`` (settings
changes in tests, a new time zone). poolwatch wraps that property: the pool it returns is
instrumented before Django's first ``getconn()``, with ``name=<alias>``; closing it ends the
instrumentation, so the next pool of the alias takes the name. Settings come from
``POOLWATCH_*`` environment variables, or from ``settings.POOLWATCH`` (a dict of
:func:`poolwatch.instrument` keywords, e.g. ``{"labels": {"role": "web"}}``); ``name`` is always
the alias.
"""

from __future__ import annotations

import threading
from typing import Any

from poolwatch import api
from poolwatch.core.config import resolve_settings
from poolwatch.core.errors import logger

__all__ = ["install", "uninstall"]

_lock = threading.Lock()
_original: Any = None
_NOT_SETTINGS = ("registry", "tracer_provider", "meter_provider")


def _options() -> dict[str, Any]:
    from django.conf import settings

    given = getattr(settings, "POOLWATCH", None) or {}
    if not isinstance(given, dict):
        raise TypeError(
            f"poolwatch: settings.POOLWATCH is a {type(given).__name__}; it accepts a dict of "
            "poolwatch.instrument() keywords"
        )
    options = dict(given)
    options.pop("name", None)
    return options


def install() -> None:
    """Instrument every pool Django creates from now on (idempotent)."""
    global _original
    from django.db.backends.postgresql.base import DatabaseWrapper

    options = _options()
    # A bad setting fails at startup, not at the first request.
    resolve_settings({k: v for k, v in options.items() if k not in _NOT_SETTINGS})
    with _lock:
        if _original is not None:
            return
        original = DatabaseWrapper.pool
        getter = original.fget

        def pool(self: Any) -> Any:
            created = getter(self)
            if created is not None and api.instrumented(created) is None:
                try:
                    api.instrument(created, {**options, "name": self.alias})
                except Exception as e:  # never break Django's connection handling
                    logger.warning("poolwatch: could not instrument the pool of %r: %r",
                                   self.alias, e)
            return created

        DatabaseWrapper.pool = property(pool, doc=original.__doc__)
        _original = original
    # Pools Django already created (settings imported a model, a management command ran).
    for alias, created in list(DatabaseWrapper._connection_pools.items()):
        if api.instrumented(created) is None and not created.closed:
            api.instrument(created, {**options, "name": alias})


def uninstall() -> None:
    """Stop instrumenting new pools and uninstrument the ones of every alias."""
    global _original
    from django.db.backends.postgresql.base import DatabaseWrapper

    with _lock:
        if _original is None:
            return
        DatabaseWrapper.pool = _original
        _original = None
    for created in list(DatabaseWrapper._connection_pools.values()):
        api.uninstrument(created)
