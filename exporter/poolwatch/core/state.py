"""What one pool is doing right now, kept by the listeners and read by the metrics backends.

The hot path only touches a dict and a list, each a single C-level call that is atomic under
the GIL; gauges are computed from this state when a backend collects, so a checkout never pays
for them.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from poolwatch.core import lifecycle
from poolwatch.core.errors import ErrorReporter

if TYPE_CHECKING:
    from poolwatch.core.server_probe import ServerLimits

__all__ = ["PoolLimits", "PoolSet", "PoolSnapshot", "PoolState"]

T = TypeVar("T")
_WAITING_SLOTS = 64


@dataclass(frozen=True)
class PoolLimits:
    """The pool's configuration; ``None`` where the pool has no such setting."""

    pool_class: str
    max: int | None = None
    idle_max: int | None = None
    idle_min: int | None = None
    timeout: float | None = None
    recycle: float | None = None
    pre_ping: bool | None = None
    pool_size: int | None = None
    max_overflow: int | None = None
    server_address: str | None = None
    """The server as the pool addresses it (semconv ``server.address``, ``server.port``,
    ``db.namespace``): the join key of the fleet rules."""
    server_port: int | None = None
    db_namespace: str | None = None
    # psycopg_pool's own settings, under its own names.
    min_size: int | None = None
    max_size: int | None = None
    max_waiting: int | None = None
    max_lifetime: float | None = None
    max_idle: float | None = None

    # The labels of the poolwatch_pool_info series, in this order, as every backend exports them:
    # one label set for every pool library (a metric family has one), each pool leaving the
    # settings it does not have empty, which Prometheus stores as absent. So a SQLAlchemy pool's
    # series is what it was before psycopg_pool's settings were added, and a psycopg_pool pool's
    # has no pool_size/max_overflow/recycle/pre_ping.
    INFO_LABELS = (
        "pool_class", "pool_size", "max_overflow", "timeout", "recycle", "pre_ping",
        "server_address", "server_port", "db_namespace",
        "min_size", "max_size", "max_waiting", "max_lifetime", "max_idle",
    )  # fmt: skip

    def info(self) -> dict[str, str]:
        """The configuration as info-series label values ("" where the pool has no such setting)."""
        return {name: _label_value(getattr(self, name)) for name in self.INFO_LABELS}

    def with_server(
        self, address: str | None, port: int | None, namespace: str | None
    ) -> PoolLimits:
        """These limits, of a pool that addresses the server ``address:port/namespace``."""
        return dataclasses.replace(
            self, server_address=address, server_port=port, db_namespace=namespace
        )


def _label_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class PoolSnapshot:
    used: int
    idle: int
    pending: int
    longest_wait: float
    leaked: int
    limits: PoolLimits


class PoolState:
    """The truth about one named pool across its generations (``engine.dispose()`` swaps pools).

    ``checked_out`` maps each checked-out connection record to its checkout time; ``live`` holds
    the records whose DBAPI connection is open and owned by the engine's current pool (weakly,
    so an engine dropped by the application is collected with its connections);
    ``waiting`` holds the start time of every caller inside ``pool.connect()``
    (:class:`poolwatch.core.hotpath.Waiting`).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        # Replaced by the pool-specific instrumentation, which knows where to read the limits.
        self.limits: Callable[[], PoolLimits] = lambda: PoolLimits(pool_class="")
        self.checked_out: dict[Any, float] = {}
        self.live: weakref.WeakSet[Any] = weakref.WeakSet()
        self.orphans: weakref.WeakSet[Any] = weakref.WeakSet()
        # Imported here: build reads the settings module, which reads the catalog, which
        # imports this module.
        from poolwatch.core import build

        # Read by the checkin wrapper on every checkin (see has_orphans).
        self.orphans_flag = build.Flag()
        # Enough slots for most pools from the start, so they rarely grow.
        self.waiting = build.Waiting(_WAITING_SLOTS)
        self.leaked: dict[Any, float] = {}
        self.errors = ErrorReporter(name)
        self.server_limits: ServerLimits | None = None
        """The database server's connection limits as last read (:mod:`.server_probe`)."""
        self.is_open: Callable[[Any], bool] = _always_open
        """Whether a connection in ``live`` is really open, as the source can tell: a pool may
        close one without an event (SQLAlchemy closes a connection whose ``connect`` listener
        raised), and the gauges must follow the connection, not the event."""
        # Set by a source that must bring ``live`` up to date before it is read (psycopg_pool:
        # drop the connections the pool closed or discarded since the last collection).
        self.refresh: Callable[[], None] | None = None

    @property
    def has_orphans(self) -> bool:
        """Whether ``orphans`` may hold a record: a flag, because even an empty WeakSet costs a
        Python-level ``__len__`` per checkin."""
        return self.orphans_flag.value

    @has_orphans.setter
    def has_orphans(self, value: bool) -> None:
        self.orphans_flag.value = value

    def returned_unknown(self, record: Any) -> None:
        """A connection checked out before ``instrument()`` came back: it is the pool's, idle
        now if it is open (it was never seen opening)."""
        if self.is_open(record):
            self.live.add(record)

    def take_over(self, other: PoolState) -> None:
        """Continue the accounting of ``other``, the state of an instrumentation this one
        replaces on the same pool (an explicit ``instrument()`` refining the automatic mode)."""
        self.checked_out.update(other.checked_out)
        for record in list(other.live):
            self.live.add(record)
        for record in list(other.orphans):
            self.orphans.add(record)
        self.has_orphans = bool(self.orphans)

    def disown_current_records(self) -> None:
        """Called after the engine swapped in a new pool: the old pool's records are no longer
        ours once they are idle; records still checked out stay counted as used until checkin."""
        out = set(self.checked_out)
        for record in list(self.live):
            if record in out:
                self.orphans.add(record)
                self.has_orphans = True
            else:
                self.live.discard(record)

    def orphan_returned(self, record: Any) -> None:
        """A record of a pool the engine no longer uses came back: that pool closes it when it
        is garbage collected, so it is not ours to count any more."""
        if record in self.orphans:
            self.orphans.discard(record)
            self.live.discard(record)
        if not self.orphans:
            self.has_orphans = False

    def forget_parent(self) -> None:
        """In a child after ``fork()``: the connections checked out and the callers waiting were
        the parent's threads', which do not exist here and will never return them. The idle ones
        stay: they are in the child's copy of the pool. Cleared in place, because the installed
        wrappers hold these containers."""
        held = list(self.checked_out)
        self.checked_out.clear()
        for record in held:
            self.live.discard(record)
        for record in list(self.orphans):
            self.live.discard(record)
        self.orphans.clear()
        self.has_orphans = False
        self.leaked.clear()
        self.waiting.clear()

    def snapshot(self) -> PoolSnapshot:
        if self.refresh is not None:
            self.refresh()
        out = list(self.checked_out)
        is_open = self.is_open
        live = {r for r in list(self.live) if is_open(r)}
        used_open = sum(1 for r in out if r in live)
        waiting = self.waiting.starts()
        now = time.perf_counter()
        return PoolSnapshot(
            used=len(out),
            idle=max(0, len(live) - used_open),
            pending=len(waiting),
            longest_wait=(now - min(waiting)) if waiting else 0.0,
            leaked=len(self.leaked),
            limits=self.limits(),
        )


def _always_open(record: Any) -> bool:
    return True


class PoolSet(Generic[T]):
    """The pools a metrics backend exports, each with what that backend keeps for it (its label
    values, its attributes); read at collection time from another thread."""

    def __init__(self) -> None:
        self._pools: dict[str, tuple[PoolState, T]] = {}
        self._lock = threading.Lock()
        _pool_sets.add(self)

    def after_fork(self) -> None:
        """In a child after ``fork()``: a lock another thread held at the fork stays held."""
        self._lock = threading.Lock()

    def add(self, state: PoolState, extra: T) -> None:
        with self._lock:
            self._pools[state.name] = (state, extra)

    def remove(self, state: PoolState) -> None:
        with self._lock:
            if state.name in self._pools and self._pools[state.name][0] is state:
                del self._pools[state.name]

    def items(self) -> list[tuple[PoolState, T]]:
        with self._lock:
            return list(self._pools.values())


_pool_sets: weakref.WeakSet[PoolSet[Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool_set in list(_pool_sets):
        pool_set.after_fork()


lifecycle.after_fork_in_child(_after_fork_in_child)
