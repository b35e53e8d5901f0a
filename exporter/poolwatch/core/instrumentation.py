"""The handle ``instrument()`` returns, for any pool library: a :class:`Source` plus backends.

The core knows nothing of SQLAlchemy, psycopg_pool, Prometheus or OpenTelemetry. A source (one
module per pool library, under :mod:`poolwatch.sources`) adapts a pool object to
:class:`Source`; the backends are built by a :data:`TelemetryFactory` the caller passes (the
public API wires the Prometheus, multiprocess and OpenTelemetry backends into it). Between them,
this module claims the pool's name, keeps its :class:`~poolwatch.core.state.PoolState`, starts
the leak watcher, and guarantees that ``uninstrument()``, a dropped pool and a fork each leave
no wrong series behind.
"""

from __future__ import annotations

import dataclasses
import gc
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from poolwatch.core import lifecycle
from poolwatch.core.config import resolve_settings
from poolwatch.core.errors import logger
from poolwatch.core.leaks import LeakDetector
from poolwatch.core.lifecycle import defer, run_deferred
from poolwatch.core.naming import NameRegistry
from poolwatch.core.settings import Settings
from poolwatch.core.state import PoolLimits, PoolState
from poolwatch.core.tracker import NULL_TRACKER, PoolTracker

__all__ = [
    "Instrumentation",
    "Source",
    "Telemetry",
    "TelemetryFactory",
    "WaitHook",
    "instrument_source",
    "instrumented",
    "uninstrument_target",
]

WaitHook = Callable[[float, float, "BaseException | None"], None]
"""Called after every checkout with ``perf_counter`` start and end and the error, if any."""


@dataclass(frozen=True)
class Telemetry:
    """What the backends give one pool."""

    tracker: PoolTracker = NULL_TRACKER
    on_wait: WaitHook | None = None
    """Wait spans (OpenTelemetry tracing), or None."""
    tracing: Any = None
    """The tracing backend's per-pool object, for sources that add statement spans; or None."""


TelemetryFactory = Callable[[PoolState, Settings, str], Telemetry]
"""``(state, settings, db_system) -> Telemetry``: builds the backends for one pool."""


class Source(Protocol):
    """One pool library's adapter (HikariCP's ``PoolStats`` plus the seams it installs)."""

    kind: str
    """``"sqlalchemy"``, ``"psycopg_pool"``: for messages."""
    db_system: str
    """OpenTelemetry ``db.system.name`` of the pool's database."""

    def target(self) -> object | None:
        """The object the application holds (engine, pool), or None once it is gone."""

    def default_name(self) -> str:
        """The semantic conventions' ``host:port/database``; never a user or password."""

    def limits(self) -> PoolLimits:
        """The pool's configuration now (read at collection time)."""

    def install(self, inst: Instrumentation) -> None:
        """Add the listeners and wrappers that feed ``inst.state`` and ``inst.tracker``."""

    def uninstall(self) -> None:
        """Remove exactly what :meth:`install` added; idempotent."""

    def released(self) -> bool:
        """Whether the application is done with the pool although it is still reachable (a
        disposed engine not used since, a closed pool): its name may then be given to another."""


_lock = threading.RLock()
_names = NameRegistry()
# Process-wide, as the metric contract requires names unique within a process.
_NAME_SCOPE = 0
_instrumented: weakref.WeakKeyDictionary[Any, Instrumentation] = weakref.WeakKeyDictionary()


class Instrumentation:
    """What ``instrument(pool)`` returns. ``uninstrument()`` removes exactly what was added."""

    def __init__(
        self,
        source: Source,
        settings: Settings,
        telemetry: TelemetryFactory,
        *,
        automatic: bool = False,
    ) -> None:
        self.source = source
        self.settings = settings
        self.automatic = automatic
        explicit = settings.name is not None
        wanted = settings.name if settings.name is not None else source.default_name()
        self._active = True
        self.name = _claim(wanted, self._holds, explicit=explicit)
        self._warned: set[str] = set()
        try:
            self.state = PoolState(self.name)
            self.state.limits = source.limits
            self.telemetry = telemetry(self.state, settings, source.db_system)
            self.tracker = self.telemetry.tracker
            self.on_wait = self.telemetry.on_wait
            self.leaks = (
                LeakDetector(
                    self.state, self.tracker, settings.leak_threshold, stacks=settings.leak_stacks
                )
                if settings.leak_threshold is not None
                else None
            )
        except BaseException:
            _names.release(_NAME_SCOPE, self.name, self._holds)
            raise
        source.install(self)
        if self.leaks is not None:
            self.leaks.start()
        target = source.target()
        # Pools dropped by the application take their series with them.
        self._finalizer = weakref.finalize(target, _release, self) if target is not None else None

    @property
    def active(self) -> bool:
        """True until ``uninstrument()`` (or until the pool is dropped)."""
        return self._active

    def _holds(self) -> bool:
        """Whether this instrumentation still holds its name: its pool is alive, instrumented
        and not disposed (see :meth:`Source.released`)."""
        if not self._active or self.source.target() is None:
            return False
        return not self.source.released()

    def warn_ignored(self, settings: Settings) -> None:
        """A repeated ``instrument()`` returns this handle; say once which of its settings
        differ from the ones in force (they are not applied: uninstrument first to change them)."""
        for field in dataclasses.fields(Settings):
            wanted, current = getattr(settings, field.name), getattr(self.settings, field.name)
            if wanted != current and field.name not in self._warned:
                self._warned.add(field.name)
                logger.warning(
                    "poolwatch: pool %r is already instrumented; %s=%r ignored, %s=%r stays in "
                    "force (uninstrument() first to change it)",
                    self.name, field.name, _shown(field.name, wanted), field.name,
                    _shown(field.name, current),
                )  # fmt: skip

    def uninstrument(self) -> None:
        """Remove every listener and wrapper this instrumentation added; idempotent."""
        with _lock:
            if not self._active:
                return
            self._active = False
            if self._finalizer is not None:
                self._finalizer.detach()
            for target, inst in list(_instrumented.items()):
                if inst is self:
                    del _instrumented[target]
        self._teardown()

    def _teardown(self) -> None:
        try:
            self.source.uninstall()
            if self.leaks is not None:
                self.leaks.stop()
            self.tracker.close()
        except Exception as e:
            self.state.errors.report("uninstrument", e)
        finally:
            _names.release(_NAME_SCOPE, self.name, self._holds)

    def __repr__(self) -> str:
        return f"<poolwatch.Instrumentation {self.name!r} active={self._active}>"


def _claim(wanted: str, holds: Callable[[], bool], *, explicit: bool) -> str:
    if not _names.free(_NAME_SCOPE, wanted):
        # Its holder may be unreachable but not yet collected (SQLAlchemy engines sit in
        # reference cycles until a garbage collection), or disposed: then the name is free.
        gc.collect()
        run_deferred()
        holder = _holder_of(wanted)
        if holder is not None and not holder._holds():
            holder.uninstrument()
    return _names.claim(_NAME_SCOPE, wanted, holds, explicit=explicit)


def _holder_of(name: str) -> Instrumentation | None:
    for inst in list(_instrumented.values()):
        if inst.name == name:
            return inst
    return None


def _shown(setting: str, value: object) -> object:
    # Label values can be anything the user chose; their names are enough to say what differs.
    if setting == "labels" and isinstance(value, dict):
        return sorted(value)
    return value


def _release(inst: Instrumentation) -> None:
    # Runs inside the garbage collector: no locks here (see lifecycle.py).
    inst._active = False
    defer(inst._teardown)


def instrument_source(
    key: object,
    make_source: Callable[[], Source],
    overrides: dict[str, Any],
    telemetry: TelemetryFactory,
    *,
    automatic: bool = False,
) -> Instrumentation:
    """Instrument the pool object ``key`` (once: a second call returns the same handle)."""
    settings = resolve_settings(overrides)
    run_deferred()
    with _lock:
        existing = _instrumented.get(key)
        if existing is not None and existing.active:
            if existing.automatic and not automatic:
                # An explicit call refines what the automatic mode did (e.g. gives a name).
                existing.uninstrument()
                inst = Instrumentation(make_source(), settings, telemetry, automatic=automatic)
                inst.state.take_over(existing.state)
                _instrumented[key] = inst
                return inst
            existing.warn_ignored(settings)
            return existing
        inst = Instrumentation(make_source(), settings, telemetry, automatic=automatic)
        _instrumented[key] = inst
    return inst


def uninstrument_target(key: object) -> bool:
    run_deferred()
    with _lock:
        inst = _instrumented.get(key)
    if inst is None:
        return False
    inst.uninstrument()
    return True


def instrumented(key: object) -> Instrumentation | None:
    with _lock:
        return _instrumented.get(key)


def _after_fork_in_child() -> None:
    """Each child's pools are its own: what the parent's threads had checked out or were
    waiting for is forgotten (see :meth:`PoolState.forget_parent`); the backends reset their
    counts and the sampler restarts in their own fork handlers."""
    global _lock
    _lock = threading.RLock()
    for inst in list(_instrumented.values()):
        if inst.active:
            inst.state.forget_parent()


lifecycle.after_fork_in_child(_after_fork_in_child)
