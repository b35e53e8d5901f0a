"""``instrument()`` with no engine: every engine created afterwards is instrumented.

``create_engine`` ends every engine it makes by calling the dialect class's ``engine_created`` hook
(``Dialect.engine_created``, documented for dialects and wrappers "to apply special events to the
engine"), whichever module ``create_engine`` was imported from and however long before
``instrument()``; ``create_async_engine`` makes its sync engine the same way. The automatic mode
replaces that hook on ``Dialect`` itself, so every dialect class that does not override it reaches
poolwatch. A dialect that overrides it without calling ``super()`` is not seen: ``instrument()``
logs a WARNING naming each such dialect class it finds, and those engines must be passed to
``instrument(engine)``.

Nothing is added to a statement's or a checkout's path: the hook runs once per engine, where
class-level ``Engine`` or ``Pool`` events would be consulted by every engine, and an ``Engine``
listener sends every statement down SQLAlchemy's slower event path.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.engine.interfaces import Dialect

from poolwatch.core.errors import logger

__all__ = ["AllEngines", "describe_engine", "instrument_all"]

_HOOK = "engine_created"

_lock = threading.Lock()
_current: AllEngines | None = None


def describe_engine(engine: Any) -> str:
    """The engine's URL without user, password or query (which can carry ``password=``)."""
    try:
        url = getattr(engine, "url", None)
        if isinstance(url, URL):
            bare = URL.create(url.drivername, host=url.host, port=url.port, database=url.database)
            return repr(bare.render_as_string())
    except Exception:
        pass
    return type(engine).__name__


def _reason(error: BaseException) -> str:
    # poolwatch's own configuration errors say which setting is wrong; anything else could come
    # from a driver and quote the URL, so only its type is logged.
    if isinstance(error, (ValueError, TypeError)) and str(error).startswith("poolwatch"):
        return str(error)
    return type(error).__name__


def _subclasses(cls: type) -> Iterator[type]:
    seen: set[type] = set()
    stack = [cls]
    while stack:
        subs: list[type] = stack.pop().__subclasses__()
        for sub in subs:
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
                yield sub


def _overriding_dialects() -> list[str]:
    """Imported dialect classes with their own ``engine_created`` (which may not call ours)."""
    return sorted(
        f"{c.__module__}.{c.__qualname__}" for c in _subclasses(Dialect) if _HOOK in c.__dict__
    )


class AllEngines:
    """Handle for the automatic mode; ``uninstrument()`` restores the hook and removes poolwatch
    from every engine this mode instrumented."""

    def __init__(self, instrument: Callable[[Any], Any]) -> None:
        # ``instrument(engine)`` with the settings and backends of the call that made this mode.
        self._instrument_one = instrument
        self._original: Any = None
        self._handles: list[Any] = []
        self._seen: weakref.WeakSet[Any] = weakref.WeakSet()
        self._active = False

    def _install(self) -> None:
        original = Dialect.__dict__.get(_HOOK)
        if not isinstance(original, classmethod):
            logger.error(
                "poolwatch: this SQLAlchemy has no Dialect.engine_created hook; instrument() "
                "with no engine cannot see new engines: pass each engine to instrument(engine)"
            )
            return
        self._active = True
        self._original = original
        owner = self
        call_original = original.__func__

        def engine_created(cls: type[Dialect], engine: Any) -> None:
            call_original(cls, engine)
            if owner._active:
                owner._instrument(engine)

        engine_created._poolwatch_all = self  # type: ignore[attr-defined]
        engine_created.__doc__ = call_original.__doc__
        setattr(Dialect, _HOOK, classmethod(engine_created))
        missed = _overriding_dialects()
        if missed:
            logger.warning(
                "poolwatch: instrument() with no engine does not see engines of %s (the dialect "
                "overrides engine_created); pass those engines to instrument(engine)",
                ", ".join(missed),
            )

    def _instrument(self, engine: Any) -> None:
        # create_engine calls the hook on the dialect class and again on its entry point when
        # they differ: one instrumentation per engine.
        if engine in self._seen:
            return
        self._seen.add(engine)
        try:
            self._handles.append(self._instrument_one(engine))
        except Exception as e:
            logger.error(
                "poolwatch: could not instrument engine %s: %s", describe_engine(engine), _reason(e)
            )

    @property
    def active(self) -> bool:
        """True until ``uninstrument()``."""
        return self._active

    def uninstrument(self) -> None:
        """Restore ``create_engine`` and remove poolwatch from every engine this mode
        instrumented (not from engines instrumented explicitly); idempotent."""
        global _current
        with _lock:
            if not self._active:
                return
            self._active = False
            current = Dialect.__dict__.get(_HOOK)
            if getattr(getattr(current, "__func__", None), "_poolwatch_all", None) is self:
                setattr(Dialect, _HOOK, self._original)
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
