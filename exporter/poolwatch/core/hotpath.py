"""The code every checkout, checkin and statement runs, compiled by Cython where it can be.

These wrappers replace ``pool.connect``, ``pool._return_conn`` and the dialect's ``do_execute*``
(see :mod:`poolwatch.sources.sqlalchemy.pool` and :mod:`poolwatch.sources.sqlalchemy.statements`
for why those seams). They
are plain Python, and the package build compiles this one module with Cython in pure-Python mode,
the pattern of SQLAlchemy's own ``*_cy.py`` modules: one source, no Python frame per call and no
bytecode dispatch when compiled. Compiled, poolwatch costs about half the machine instructions
per SQLite ``SELECT 1`` that it costs interpreted, and a checkout, statement and checkin take
0.4 µs instead of 0.75 µs (docs/performance.md, "The compiled hot path").
:mod:`poolwatch.core.build` picks the build.

The wrappers read what may change while they are installed from a :class:`Switch`, and a
statement's recorders from its :class:`Series`: compiled, both are C structs, so those reads cost
no attribute lookup. The ``cython.*`` annotations are C types when compiled and never evaluated
when interpreted.

Everything here only records: the application's call runs exactly as it would without poolwatch,
its exception propagates unchanged, and an error while recording is reported, never raised.
"""

from __future__ import annotations

import math
import threading
from array import array
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from poolwatch.core import _cython_shim as cython
else:
    try:
        import cython  # compiled: a compile-time module, this import runs nothing
    except ModuleNotFoundError:  # Cython is needed to build the extension, not to run it
        from poolwatch.core import _cython_shim as cython

if TYPE_CHECKING or not cython.compiled:
    from time import perf_counter_ns as _ticks

    from poolwatch.core._cython_shim import PyMem_Free, PyMem_Realloc  # compiled only
else:
    from cython.cimports.cpython.mem import PyMem_Free, PyMem_Realloc
    from cython.cimports.cpython.time import PyTime_PerfCounterRaw as _ticks


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _clock() -> cython.double:
    """``time.perf_counter()``, compiled: the same clock and the same value (CPython divides
    the same nanoseconds by 1e9), as an inlined C call. Half the cost of a clock read here was
    CPython's conversion to seconds, which takes an integer modulo first."""
    return _ticks() / 1e9


if not cython.compiled:
    from time import perf_counter as _clock  # the same, interpreted

__all__ = [
    "COMPILED", "NOT_WAITING", "SEEN", "Buckets", "Flag", "Series", "Switch", "Waiting",
    "async_checkin_wrapper", "async_checkout_wrapper", "async_cursor_execute_wrapper", "cells_of",
    "checkin_wrapper", "checkout_wrapper", "cursor_execute_wrapper", "execute_wrapper",
]  # fmt: skip

COMPILED: bool = cython.compiled
NOT_WAITING = math.inf
"""The start time of a free slot of a :class:`Waiting`."""
SEEN = "_poolwatch_seen"
"""The attribute a psycopg connection gets when poolwatch has prepared it: the instrumentation's
:class:`Switch`."""

Recorder = Callable[[float], None]


@cython.final
@cython.cclass
class Switch:
    """What the installed wrappers of one instrumentation read on every call."""

    on: bool = cython.declare(cython.bint, visibility="public")
    """False after ``uninstrument()``: a wrapper someone else wrapped again stays, inert."""
    hooks: Any = cython.declare(object, visibility="public")
    """The :class:`poolwatch.sources.sqlalchemy.statements.CursorHooks` to run around statements,
    or None."""

    def __init__(self) -> None:
        self.on = False
        self.hooks = None


@cython.final
@cython.cclass
class Flag:
    """A flag of a :class:`poolwatch.core.state.PoolState` that a wrapper reads on every call:
    compiled, a C field, where an attribute of the state was a dictionary lookup."""

    value: bool = cython.declare(cython.bint, visibility="public")

    def __init__(self) -> None:
        self.value = False


@cython.final
@cython.cclass
class Waiting:
    """The start time of every caller inside a pool's checkout, one slot each: what the
    ``pending`` gauge and the longest wait are read from. The slots grow to the most callers
    ever inside at once, and are reused.

    Compiled, two C arrays (the start times, and a stack of the free slots): :meth:`enter` and
    :meth:`leave` run with the GIL held and call no Python code, so no two callers get the same
    slot and no reader sees half a change, and a checkout makes no float or int object for them
    (docs/performance.md, "The last row met"). Interpreted, two lists, whose ``pop`` and
    ``append`` are atomic.
    """

    _size: cython.Py_ssize_t
    _nfree: cython.Py_ssize_t
    _starts: cython.p_double
    _free: cython.p_Py_ssize_t
    _start_list: list[float]
    _free_list: list[int]
    _grow_lock: Any

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"Waiting: size must be at least 1, not {size}")
        self._size = 0
        self._nfree = 0
        if cython.compiled:
            self._starts = cython.NULL
            self._free = cython.NULL
            if not self._grow(size):
                raise MemoryError()
        else:
            self._grow_lock = threading.Lock()
            self._start_list = [NOT_WAITING] * size
            self._free_list = list(range(size - 1, -1, -1))  # slot 0 is taken first

    def __dealloc__(self) -> None:
        if cython.compiled:
            PyMem_Free(self._starts)
            PyMem_Free(self._free)

    @cython.cfunc
    @cython.exceptval(check=False)
    def _grow(self, size: cython.Py_ssize_t) -> cython.bint:
        """Compiled: ``size`` slots, the new ones free; False if there is no memory for them
        (nothing lost: a reallocated array keeps its slots). All C: no other caller runs in
        between."""
        i: cython.Py_ssize_t
        starts = cython.cast(
            cython.p_double, PyMem_Realloc(self._starts, size * cython.sizeof(cython.double))
        )
        if starts == cython.NULL:
            return False
        self._starts = starts
        free = cython.cast(
            cython.p_Py_ssize_t,
            PyMem_Realloc(self._free, size * cython.sizeof(cython.Py_ssize_t)),
        )
        if free == cython.NULL:
            return False
        self._free = free
        for i in range(size - 1, self._size - 1, -1):
            self._starts[i] = NOT_WAITING
            self._free[self._nfree] = i
            self._nfree += 1
        self._size = size
        return True

    @cython.ccall
    @cython.exceptval(check=False)
    def enter(self, start: cython.double) -> cython.Py_ssize_t:
        """A free slot, now holding ``start``; compiled, -1 if there was none and no memory for
        more (that caller is not counted: a checkout never fails for poolwatch)."""
        slot: cython.Py_ssize_t
        if cython.compiled:
            if self._nfree == 0 and not self._grow(2 * self._size):
                return -1
            self._nfree -= 1
            slot = self._free[self._nfree]
            self._starts[slot] = start
            return slot
        try:
            slot = self._free_list.pop()
        except IndexError:
            with self._grow_lock:
                self._start_list.append(NOT_WAITING)
                slot = len(self._start_list) - 1
        self._start_list[slot] = start
        return slot

    @cython.ccall
    @cython.exceptval(check=False)
    def leave(self, slot: cython.Py_ssize_t) -> cython.void:
        """Free ``slot`` (taken by :meth:`enter`)."""
        if slot < 0:
            return
        if cython.compiled:
            self._starts[slot] = NOT_WAITING
            self._free[self._nfree] = slot
            self._nfree += 1
            return
        self._start_list[slot] = NOT_WAITING
        self._free_list.append(slot)

    def starts(self) -> list[float]:
        """The start time of every caller inside now."""
        i: cython.Py_ssize_t
        if cython.compiled:
            # A list allocated and filled with no Python code run: read in one piece.
            found = []
            for i in range(self._size):
                if self._starts[i] != NOT_WAITING:
                    found.append(self._starts[i])
            return found
        return [start for start in list(self._start_list) if start != NOT_WAITING]

    def free_slots(self) -> list[int]:
        """The free slots, in no order."""
        if cython.compiled:
            return [self._free[i] for i in range(self._nfree)]
        return list(self._free_list)

    @property
    def size(self) -> int:
        """How many slots there are, taken or free."""
        return self._size if cython.compiled else len(self._start_list)

    def clear(self) -> None:
        """Every slot free (in a child after ``fork()``: the callers inside were the parent's
        threads). In place: the installed wrappers hold this object."""
        i: cython.Py_ssize_t
        if cython.compiled:
            self._nfree = 0
            for i in range(self._size - 1, -1, -1):
                self._starts[i] = NOT_WAITING
                self._free[self._nfree] = i
                self._nfree += 1
            return
        self._grow_lock = threading.Lock()  # the parent's may have been held at fork()
        self._start_list[:] = [NOT_WAITING] * len(self._start_list)
        self._free_list[:] = list(range(len(self._start_list) - 1, -1, -1))


@cython.final
@cython.cclass
class Buckets:
    """A histogram's bucket counts and sum, for the compiled build: ``record`` counts a value at
    once, in C.

    Compiled, ``record`` bisects a C array of bounds and increments a C counter: no float object
    kept, nothing deferred, nothing to drain, and as it runs no Python code and holds the GIL
    from start to end, no other thread's ``record`` or ``snapshot`` can interleave with it.
    Interpreted, it would be a Python call per value, dearer than the ``deque.append`` of
    :class:`poolwatch.backends.prometheus.histogram.HistogramChild`, which is what the interpreted
    build uses.
    """

    # C arrays when compiled (typed memoryviews over array.array). mypy reads ``double[:]`` as
    # ``float`` (the shim's alias), hence the ignores on the lines that index them.
    bounds: cython.double[:]  # type: ignore[type-arg,valid-type]
    counts: cython.longlong[:]  # type: ignore[type-arg,valid-type]
    n: cython.Py_ssize_t
    total: cython.double

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = array("d", bounds)  # type: ignore[assignment]
        self.counts = array("q", [0] * (len(bounds) + 1))  # type: ignore[assignment]
        self.n = len(bounds)
        self.total = 0.0

    def record(self, value: cython.double) -> None:
        """Count ``value`` in the first bucket whose upper bound is >= it (``le``; +Inf last),
        the bucket ``bisect_left`` finds."""
        self.add(value)

    @cython.cfunc
    @cython.inline
    @cython.exceptval(check=False)
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def add(self, value: cython.double) -> cython.void:
        """:meth:`record`, for the wrappers here: a C call, with no float object made."""
        lo: cython.Py_ssize_t = 0
        hi: cython.Py_ssize_t = self.n
        mid: cython.Py_ssize_t
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.bounds[mid] < value:  # type: ignore[index]
                lo = mid + 1
            else:
                hi = mid
        self.counts[lo] += 1  # type: ignore[index]
        self.total += value

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def snapshot(self) -> tuple[list[int], float]:
        """The counts per bucket (not cumulative) and the sum, read together."""
        i: cython.Py_ssize_t
        # The list exists before the first read, and filling it allocates only ints and the
        # float, which never start a garbage collection: no finaliser, so no other thread, runs
        # between the first read and the last.
        counts = [0] * (self.n + 1)
        for i in range(self.n + 1):
            counts[i] = self.counts[i]  # type: ignore[index]
        return counts, self.total


def cells_of(record: Any) -> Buckets | None:
    """The :class:`Buckets` whose ``record`` ``record`` is, or None (an exemplar's recorder, the
    multiprocess or OpenTelemetry backend's, the interpreted build's ``deque.append``). The
    wrappers call a Buckets' :meth:`Buckets.add` directly: with the recorder called as a Python
    method, its call and the float made for it were a third of a checkout's cost."""
    owner = getattr(record, "__self__", None)
    return owner if type(owner) is Buckets else None


@cython.final
@cython.cclass
class Series:
    """One statement summary's recorders (see :class:`poolwatch.core.tracker.Sink`)."""

    operation: str = cython.declare(str, visibility="public")
    summary: str = cython.declare(str, visibility="public")
    # Read-only, so that ``cells`` (derived from it) cannot go stale.
    record: Recorder = cython.declare(object, visibility="readonly")
    pending: Callable[[], int] | None = cython.declare(object, visibility="public")
    """None when ``record`` never defers (no call per statement to learn that nothing waits)."""
    drain: Callable[[], None] = cython.declare(object, visibility="public")
    cells: Buckets | None = cython.declare(Buckets, visibility="readonly")
    """``record``'s :class:`Buckets` (see :func:`cells_of`), or None."""

    def __init__(
        self,
        operation: str,
        summary: str,
        record: Recorder,
        pending: Callable[[], int] | None,
        drain: Callable[[], None],
    ) -> None:
        self.operation = operation
        self.summary = summary
        self.record = record
        self.pending = pending
        self.drain = drain
        self.cells = cells_of(record)


def _watch(unseen: Callable[[Any], None] | None, unsure: Flag | None) -> Flag:
    """The flag a checkout wrapper reads before calling ``unseen``: ``unsure``, or one never set
    (compiled, the wrapper reads a C field and must not be handed None)."""
    if (unseen is None) != (unsure is None):
        raise ValueError("unseen and unsure are given together or not at all")
    return unsure if unsure is not None else Flag()


def checkout_wrapper(
    connect: Callable[..., Any],
    switch: Switch,
    instrumentation: Any,
    record_wait: Recorder,
    pending: Callable[[], int] | None,
    drain: Callable[[], None],
    pending_limit: int,
    timeout_error: type[BaseException],
    key: str | None = "_connection_record",
    unseen: Callable[[Any], None] | None = None,
    unsure: Flag | None = None,
) -> Callable[..., Any]:
    """``pool.connect`` (SQLAlchemy) or ``pool.getconn`` (psycopg_pool) timed: the wait, the
    waiting callers, the checkout time of the connection's key. ``pending`` is None when
    ``record_wait`` never defers. ``key`` names the attribute of what ``connect`` returns that
    identifies the connection (SQLAlchemy's fairy: its ``_connection_record``), or None for the
    object itself (a psycopg connection); compiled, ``getattr`` with a str costs what the
    attribute access did. ``timeout`` is passed on only when given (``getconn(timeout=...)``).
    ``unseen`` (psycopg_pool) is called, before it is handed over, with a connection whose
    :data:`SEEN` attribute is not this ``switch``: one no other seam saw opening. It is looked
    for only while ``unsure`` is set, while the pool may hold one (docs/performance.md, "The
    last row met"); the literal is :data:`SEEN`, a constant string when compiled."""
    state = instrumentation.state
    # A slot per caller inside connect(), where a dict keyed by start time hashed a float twice
    # per checkout and resized under the churn of 30 waiters coming and going.
    waiting: Waiting = state.waiting
    watch: Flag = _watch(unseen, unsure)
    checked_out: dict[Any, float] = state.checked_out
    errors = state.errors
    leaks = instrumentation.leaks  # fixed for the life of the instrumentation
    on_wait = instrumentation.on_wait
    wait_cells: Buckets | None = cells_of(record_wait)

    def poolwatch_connect(timeout: Any = None) -> Any:
        t0: cython.double
        t1: cython.double
        slot: cython.Py_ssize_t
        if not switch.on:
            return connect() if timeout is None else connect(timeout)
        t0 = _clock()
        slot = waiting.enter(t0)
        try:
            fairy = connect() if timeout is None else connect(timeout)
        except timeout_error as e:
            instrumentation._checkout_failed(t0, slot, e, timed_out=True)
            raise
        except BaseException as e:
            instrumentation._checkout_failed(t0, slot, e, timed_out=False)
            raise
        t1 = _clock()
        try:
            # State first: a broken metrics backend must not make the gauges drift.
            waiting.leave(slot)
            record = fairy if key is None else getattr(fairy, key)
            checked_out.setdefault(record, t1)
            if watch.value and getattr(record, "_poolwatch_seen", None) is not switch:
                unseen(record)  # type: ignore[misc]  # set whenever watch is
            if wait_cells is not None:
                wait_cells.add(t1 - t0)
            else:
                record_wait(t1 - t0)
            if pending is not None and pending() > pending_limit:
                drain()
            if leaks is not None:
                leaks.checked_out(record)
            if on_wait is not None:
                on_wait(t0, t1, None)
        except Exception as e:
            errors.report("checkout", e)
        return fairy

    return poolwatch_connect


def async_checkout_wrapper(
    connect: Callable[..., Any],
    switch: Switch,
    instrumentation: Any,
    record_wait: Recorder,
    pending: Callable[[], int] | None,
    drain: Callable[[], None],
    pending_limit: int,
    timeout_error: type[BaseException],
    unseen: Callable[[Any], None] | None = None,
    unsure: Flag | None = None,
) -> Callable[..., Any]:
    """:func:`checkout_wrapper` for a coroutine ``connect`` (``AsyncConnectionPool.getconn``),
    keyed by the connection itself, ``unseen`` as there. A task cancelled while it waits frees its
    slot like any other failed checkout (``CancelledError`` is a ``BaseException``) and is not
    counted as an error."""
    state = instrumentation.state
    waiting: Waiting = state.waiting
    watch: Flag = _watch(unseen, unsure)
    checked_out: dict[Any, float] = state.checked_out
    errors = state.errors
    leaks = instrumentation.leaks
    on_wait = instrumentation.on_wait
    wait_cells: Buckets | None = cells_of(record_wait)

    async def poolwatch_getconn(timeout: Any = None) -> Any:
        t0: cython.double
        t1: cython.double
        slot: cython.Py_ssize_t
        if not switch.on:
            return await (connect() if timeout is None else connect(timeout))
        t0 = _clock()
        slot = waiting.enter(t0)
        try:
            conn = await (connect() if timeout is None else connect(timeout))
        except timeout_error as e:
            instrumentation._checkout_failed(t0, slot, e, timed_out=True)
            raise
        except BaseException as e:
            instrumentation._checkout_failed(t0, slot, e, timed_out=False)
            raise
        t1 = _clock()
        try:
            waiting.leave(slot)
            checked_out.setdefault(conn, t1)
            if watch.value and getattr(conn, "_poolwatch_seen", None) is not switch:
                unseen(conn)  # type: ignore[misc]
            if wait_cells is not None:
                wait_cells.add(t1 - t0)
            else:
                record_wait(t1 - t0)
            if pending is not None and pending() > pending_limit:
                drain()
            if leaks is not None:
                leaks.checked_out(conn)
            if on_wait is not None:
                on_wait(t0, t1, None)
        except Exception as e:
            errors.report("checkout", e)
        return conn

    return poolwatch_getconn


def checkin_wrapper(
    return_conn: Callable[[Any], None], switch: Switch, instrumentation: Any, record_use: Recorder
) -> Callable[[Any], None]:
    """``pool._return_conn`` timed: the hold time, recorded as the record goes back (one
    ``try`` and no ``finally``: each cost an exception-state save per checkin)."""
    state = instrumentation.state
    orphans: Flag = state.orphans_flag
    checked_out: dict[Any, float] = state.checked_out
    errors = state.errors
    leaks = instrumentation.leaks
    use_cells: Buckets | None = cells_of(record_use)

    def poolwatch_return_conn(record: Any) -> None:
        t1: cython.double
        if not switch.on:
            return_conn(record)
            return
        t1 = _clock()
        try:
            # Before the record is back in the pool, where another thread may take it. The
            # state first: a broken metrics backend must not make the gauges drift.
            t0 = checked_out.pop(record, None)
            if t0 is None:
                state.returned_unknown(record)
            if orphans.value:
                state.orphan_returned(record)
            if leaks is not None:
                leaks.checked_in(record, t0)
            if t0 is not None:
                if use_cells is not None:
                    use_cells.add(t1 - t0)
                else:
                    record_use(t1 - t0)
        except Exception as e:
            errors.report("checkin", e)
        return_conn(record)

    return poolwatch_return_conn


def async_checkin_wrapper(
    putconn: Callable[[Any], Any], switch: Switch, instrumentation: Any, record_use: Recorder
) -> Callable[[Any], Any]:
    """:func:`checkin_wrapper` for a coroutine ``putconn`` (``AsyncConnectionPool.putconn``)."""
    state = instrumentation.state
    checked_out: dict[Any, float] = state.checked_out
    errors = state.errors
    leaks = instrumentation.leaks
    use_cells: Buckets | None = cells_of(record_use)

    async def poolwatch_putconn(conn: Any) -> None:
        t1: cython.double
        if not switch.on:
            await putconn(conn)
            return
        t1 = _clock()
        try:
            t0 = checked_out.pop(conn, None)
            if t0 is None:
                state.returned_unknown(conn)
            if leaks is not None:
                leaks.checked_in(conn, t0)
            if t0 is not None:
                if use_cells is not None:
                    use_cells.add(t1 - t0)
                else:
                    record_use(t1 - t0)
        except Exception as e:
            errors.report("checkin", e)
        await putconn(conn)

    return poolwatch_putconn


def execute_wrapper(
    original: Callable[..., Any],
    switch: Switch,
    instrumentation: Any,
    cache: dict[str, Series],
    series_for: Callable[[str, Any], Series],
    hooked: Callable[[Any, str, Any, Any], Any],
    slow: float | None,
    pending_limit: int,
    *,
    no_params: bool,
) -> Callable[..., Any]:
    """The dialect's ``do_execute``/``do_executemany`` (``no_params``: ``do_execute_no_params``)
    timed into the statement's :class:`Series`; ``hooked`` runs the statement instead while
    cursor hooks are set.

    Exact signatures, no ``*args``/``**kwargs``: packing arguments into a tuple and a dict for
    every statement was a measurable part of the cost. The two wrappers repeat their recording
    lines because a shared helper would be one more call per statement.
    """
    errors = instrumentation.state.errors

    if no_params:

        def poolwatch_execute_no_params(cursor: Any, statement: str, context: Any = None) -> Any:
            t0: cython.double
            elapsed: cython.double
            series: Series
            if not switch.on:
                return original(cursor, statement, context)
            if switch.hooks is not None and context is not None:
                return hooked(cursor, statement, (), context)
            series = cache.get(statement) or series_for(statement, context)
            t0 = _clock()
            try:
                result = original(cursor, statement, context)
            except BaseException as e:
                instrumentation._failed(series, statement, _clock() - t0, e)
                raise
            elapsed = _clock() - t0
            try:
                if series.cells is not None:
                    series.cells.add(elapsed)
                else:
                    series.record(elapsed)
                if series.pending is not None and series.pending() > pending_limit:
                    series.drain()
                if slow is not None and elapsed >= slow:
                    instrumentation._log_slow(series, statement, elapsed)
            except Exception as e:
                errors.report("statement", e)
            return result

        return poolwatch_execute_no_params

    def poolwatch_execute(cursor: Any, statement: str, parameters: Any, context: Any = None) -> Any:
        t0: cython.double
        elapsed: cython.double
        series: Series
        if not switch.on:
            return original(cursor, statement, parameters, context)
        if switch.hooks is not None and context is not None:
            return hooked(cursor, statement, parameters, context)
        series = cache.get(statement) or series_for(statement, context)
        t0 = _clock()
        try:
            result = original(cursor, statement, parameters, context)
        except BaseException as e:
            instrumentation._failed(series, statement, _clock() - t0, e)
            raise
        elapsed = _clock() - t0
        try:
            if series.cells is not None:
                series.cells.add(elapsed)
            else:
                series.record(elapsed)
            if series.pending is not None and series.pending() > pending_limit:
                series.drain()
            if slow is not None and elapsed >= slow:
                instrumentation._log_slow(series, statement, elapsed)
        except Exception as e:
            errors.report("statement", e)
        return result

    return poolwatch_execute


def cursor_execute_wrapper(
    original: Callable[..., Any],
    switch: Switch,
    instrumentation: Any,
    cache: dict[str, Series],
    series_for: Callable[[Any], Series],
    slow: float | None,
    pending_limit: int,
) -> Callable[..., Any]:
    """A psycopg ``Cursor.execute`` timed into the statement's :class:`Series`: the method of
    the cursor class poolwatch derives from the connection's own (see
    :mod:`poolwatch.sources.psycopg_pool.statements`). A str query is looked up in ``cache``;
    any other (``sql.Composed``, bytes) is summarised by ``series_for`` each time."""
    errors = instrumentation.state.errors

    def execute(
        self: Any, query: Any, params: Any = None, *, prepare: Any = None, binary: Any = None
    ) -> Any:
        t0: cython.double
        elapsed: cython.double
        series: Series
        if not switch.on:
            return original(self, query, params, prepare=prepare, binary=binary)
        found = cache.get(query) if type(query) is str else None
        series = found if found is not None else series_for(query)
        t0 = _clock()
        try:
            result = original(self, query, params, prepare=prepare, binary=binary)
        except BaseException as e:
            instrumentation._failed(series, query, _clock() - t0, e)
            raise
        elapsed = _clock() - t0
        try:
            if series.cells is not None:
                series.cells.add(elapsed)
            else:
                series.record(elapsed)
            if series.pending is not None and series.pending() > pending_limit:
                series.drain()
            if slow is not None and elapsed >= slow:
                instrumentation._log_slow(series, query, elapsed)
        except Exception as e:
            errors.report("statement", e)
        return result

    return execute


def async_cursor_execute_wrapper(
    original: Callable[..., Any],
    switch: Switch,
    instrumentation: Any,
    cache: dict[str, Series],
    series_for: Callable[[Any], Series],
    slow: float | None,
    pending_limit: int,
) -> Callable[..., Any]:
    """:func:`cursor_execute_wrapper` for ``AsyncCursor.execute``."""
    errors = instrumentation.state.errors

    async def execute(
        self: Any, query: Any, params: Any = None, *, prepare: Any = None, binary: Any = None
    ) -> Any:
        t0: cython.double
        elapsed: cython.double
        series: Series
        if not switch.on:
            return await original(self, query, params, prepare=prepare, binary=binary)
        found = cache.get(query) if type(query) is str else None
        series = found if found is not None else series_for(query)
        t0 = _clock()
        try:
            result = await original(self, query, params, prepare=prepare, binary=binary)
        except BaseException as e:
            instrumentation._failed(series, query, _clock() - t0, e)
            raise
        elapsed = _clock() - t0
        try:
            if series.cells is not None:
                series.cells.add(elapsed)
            else:
                series.record(elapsed)
            if series.pending is not None and series.pending() > pending_limit:
                series.drain()
            if slow is not None and elapsed >= slow:
                instrumentation._log_slow(series, query, elapsed)
        except Exception as e:
            errors.report("statement", e)
        return result

    return execute
