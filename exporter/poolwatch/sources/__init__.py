"""Pool libraries poolwatch instruments, one subpackage or module each.

Each source module exposes ``accepts(target) -> bool``, ``instrument(target, overrides,
telemetry, *, automatic=False)``, ``uninstrument(target) -> bool`` and ``instrumented(target)``,
and adapts its pools to :class:`poolwatch.core.instrumentation.Source`. A new pool library is one
new module listed in :data:`SOURCES`.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["SOURCES", "source_for"]

SOURCES = ("poolwatch.sources.sqlalchemy", "poolwatch.sources.psycopg_pool")
"""Tried in this order; a source whose library is not installed is skipped."""


def source_for(target: Any) -> ModuleType | None:
    """The source module that accepts ``target``, or None."""
    for name in SOURCES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # its pool library is not installed
            continue
        if module.accepts(target):
            return module
    return None
