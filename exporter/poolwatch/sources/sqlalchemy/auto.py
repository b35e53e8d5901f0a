"""``instrument()`` with no engine: every engine created afterwards is instrumented.

SQLAlchemy has no "engine created" event, so, like OpenTelemetry's instrumentor, this wraps the
``create_engine`` functions where SQLAlchemy exports them. A module that ran
``from sqlalchemy import create_engine`` *before* ``instrument()`` holds the unwrapped function
and its engines are not seen, which is why README says: call it first thing at startup (before
importing the modules that create engines), or pass the engine.
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Callable
from typing import Any

from poolwatch.core.errors import logger

__all__ = ["AllEngines", "instrument_all"]

_TARGETS = (
    ("sqlalchemy", "create_engine"),
    ("sqlalchemy.engine", "create_engine"),
    ("sqlalchemy.engine.create", "create_engine"),
    ("sqlalchemy.ext.asyncio", "create_async_engine"),
    ("sqlalchemy.ext.asyncio.engine", "create_async_engine"),
)

_lock = threading.Lock()
_current: AllEngines | None = None


class AllEngines:
    """Handle for the automatic mode; ``uninstrument()`` restores ``create_engine`` and removes
    poolwatch from every engine this mode instrumented."""

    def __init__(self, instrument: Callable[[Any], Any]) -> None:
        # ``instrument(engine)`` with the settings and backends of the call that made this mode.
        self._instrument_one = instrument
        self._patched: list[tuple[Any, str, Callable[..., Any]]] = []
        self._handles: list[Any] = []
        self._active = False

    def _install(self) -> None:
        self._active = True
        for module_name, attr in _TARGETS:
            try:
                module = importlib.import_module(module_name)
            except ImportError:  # sqlalchemy.ext.asyncio without greenlet, for example
                continue
            original = getattr(module, attr, None)
            if original is None or getattr(original, "_poolwatch_all", None) is not None:
                continue
            setattr(module, attr, self._wrap(original))
            self._patched.append((module, attr, original))

    def _wrap(self, create: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(create)
        def create_engine(*args: Any, **kwargs: Any) -> Any:
            engine = create(*args, **kwargs)
            if self._active:
                self._instrument(engine)
            return engine

        create_engine._poolwatch_all = self  # type: ignore[attr-defined]
        return create_engine

    def _instrument(self, engine: Any) -> None:
        try:
            self._handles.append(self._instrument_one(engine))
        except Exception as e:
            logger.error("poolwatch: could not instrument engine %r: %s", engine, e)

    @property
    def active(self) -> bool:
        return self._active

    def uninstrument(self) -> None:
        global _current
        with _lock:
            if not self._active:
                return
            self._active = False
            for module, attr, original in self._patched:
                if getattr(getattr(module, attr, None), "_poolwatch_all", None) is self:
                    setattr(module, attr, original)
            self._patched.clear()
            handles, self._handles = self._handles, []
            if _current is self:
                _current = None
        for h in handles:
            if h.automatic:
                h.uninstrument()


def instrument_all(instrument: Callable[[Any], Any]) -> AllEngines:
    global _current
    with _lock:
        if _current is not None and _current.active:
            return _current
        handle = AllEngines(instrument)
        handle._install()
        _current = handle
        return handle
