"""poolwatch's histograms: cheap to observe, cheap to expose.

prometheus_client's ``Histogram.observe`` takes two locks and scans the buckets (about 0.5 µs, and
poolwatch observes two or three times per checkout and statement), and its exposition escapes and
validates every label of every sample on every scrape (13 µs a line on a loaded 2-core machine:
20 pools with 100 statement summaries each is 26,000 lines, a third of a second of GIL). These
histograms bisect, take one uncontended lock, and keep each child's label string rendered once.

The hot path does even less. With the compiled hot path (:mod:`poolwatch.core.build`),
:meth:`HistogramChild.record` is :meth:`poolwatch.core.hotpath.Buckets.record`: the value is counted
at once, in C, in about the time of a ``deque.append``, and nothing is kept or drained.
Interpreted, it is a ``deque.append`` (a C call, no Python frame, no lock; about a twentieth of
``observe``), and the values are folded into the buckets in batches, by
:meth:`HistogramChild.drain`, when a scrape reads the child or when the caller sees more than
:data:`poolwatch.core.tracker.PENDING_LIMIT` of them waiting (a child is a
:class:`poolwatch.core.tracker.Sink`). Either way every value is counted exactly once: ``append``
and ``popleft`` are atomic, drainers take the child's lock in turn, and a compiled ``record`` runs
start to end under the GIL. Every instruction poolwatch runs holds the GIL, and in a saturated
process (32 threads sharing five connections) it delays the next thread, so the checkout path
is kept to one such call per value. (Counting at once instead of deferring a float object per
value to a drain that sorts them saved about 800 of the 5,800 instructions poolwatch adds to a
SQLite ``SELECT 1``, median of four memory layouts under callgrind.)

They are still ordinary citizens of a prometheus_client registry: :class:`HistogramCollector`
yields them as ``HistogramMetricFamily`` objects, so an application's own ``/metrics`` shows them.
poolwatch's exporter (:mod:`poolwatch.exposition`) writes the pre-rendered lines instead.
Series have no ``_created`` samples (Prometheus ignores them and they would add a series each).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat, starmap
from typing import cast

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString as _untyped_float_to_go_string

from poolwatch.core import build as wrappers
from poolwatch.core.lifecycle import run_deferred
from poolwatch.core.tracker import NOTHING_PENDING

__all__ = ["Histogram", "HistogramChild", "HistogramCollector", "rendering_elsewhere"]


# prometheus_client's float formatting, so both expositions print numbers identically.
floatToGoString = cast(Callable[[float], str], _untyped_float_to_go_string)


# An exemplar as stored: its labels (trace_id, span_id), the observed value, when.
_Exemplar = tuple[Mapping[str, str], float, float]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labelstr(names: Sequence[str], values: Sequence[str]) -> str:
    # prometheus_client sorts labels; so do we, so both expositions are byte-comparable.
    return ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(zip(names, values, strict=True)))


class HistogramChild:
    """One label set. ``observe`` is the hot path."""

    __slots__ = (
        "_baseline", "_bounds", "_cells", "_counts", "_exemplars", "_lock", "_pending", "_sum",
        "label_values", "lines", "pending", "record",
    )  # fmt: skip

    def __init__(
        self,
        family: Histogram,
        label_values: tuple[str, ...],
        bounds: tuple[float, ...] | None = None,
    ) -> None:
        bounds = family.bounds if bounds is None else bounds
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()
        self._exemplars: dict[int, _Exemplar] = {}
        self._pending: deque[float] = deque()
        self._baseline: tuple[list[int], float] | None = None
        counter = wrappers.Buckets  # read per child, so a test can choose the build
        self._cells = None if counter is None else counter(bounds)
        self.record: Callable[[float], None]
        """The hot-path recorder: counts the value (compiled) or queues it for :meth:`drain`."""
        self.pending: Callable[[], int]
        """How many recorded values wait to be folded in (compiled: always 0)."""
        if self._cells is None:
            self.record, self.pending = self._pending.append, self._pending.__len__
        else:
            self.record, self.pending = self._cells.record, NOTHING_PENDING
        self.label_values = label_values
        labels = _labelstr(family.labelnames, label_values)
        sep = "," if labels else ""
        # Rendered once: the part of every line before its value.
        self.lines = (
            tuple(
                f'{family.name}_bucket{{{labels}{sep}le="{le}"}} '
                for le in [*(floatToGoString(b) for b in bounds), "+Inf"]
            ),
            f"{family.name}_count{{{labels}}} " if labels else f"{family.name}_count ",
            f"{family.name}_sum{{{labels}}} " if labels else f"{family.name}_sum ",
        )

    @property
    def bounds(self) -> tuple[float, ...]:
        return self._bounds

    def observe(self, amount: float, exemplar: Mapping[str, str] | None = None) -> None:
        i = bisect_left(self._bounds, amount)
        if self._cells is not None:
            self._cells.record(amount)
        else:
            with self._lock:
                self._counts[i] += 1
                self._sum += amount
        if exemplar:
            self._exemplars[i] = (exemplar, amount, time.time())

    def drain(self) -> None:
        """Fold the values queued by :attr:`record` into the buckets."""
        pending = self._pending
        if not pending:
            return
        counts = self._counts
        # One drainer at a time (recorders never take the lock): the n values present now are
        # all this drainer's; values appended meanwhile wait for the next drain.
        with self._lock:
            n = len(pending)
            # Both steps loop in C: no bytecode runs per value (the drain happens on the hot
            # path, once per PENDING_LIMIT recorded values, with the GIL held).
            values = list(starmap(pending.popleft, repeat((), n)))
            self._sum += sum(values)
            values.sort()
            # Values <= each bound (upper bounds are inclusive): one bisection per bucket.
            below = 0
            for i, bound in enumerate(self._bounds):
                upto = bisect_right(values, bound, below)
                counts[i] += upto - below
                below = upto
            counts[-1] += n - below

    def snapshot(self) -> tuple[list[int], float, dict[int, _Exemplar]]:
        """Cumulative bucket counts (last = +Inf = count), the sum, the exemplars."""
        if self._cells is not None:
            counts, total = self._cells.snapshot()
            if self._baseline is not None:
                base, base_total = self._baseline
                counts = [c - b for c, b in zip(counts, base, strict=True)]
                total -= base_total
        else:
            self.drain()
            with self._lock:
                counts = list(self._counts)
                total = self._sum
        running = 0
        for i, c in enumerate(counts):
            running += c
            counts[i] = running
        return counts, total, dict(self._exemplars)


    def forget_counts(self) -> None:
        """Start again from zero (a child process after ``fork()``: the counts so far are the
        parent's). The recorders stay the same objects: the hot path holds them."""
        self._exemplars.clear()
        if self._cells is not None:
            self._baseline = self._cells.snapshot()
            return
        self._pending.clear()
        self._lock = threading.Lock()
        with self._lock:
            self._counts[:] = [0] * len(self._counts)
            self._sum = 0.0


class Histogram:
    """A family: name, help, label names, buckets; children resolved once per label set."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        unit: str = "seconds",
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self.unit = unit
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        self._lock = threading.Lock()

    def labels(self, *values: str, bounds: Sequence[float] | None = None) -> HistogramChild:
        """The child of ``values``; a new child gets ``bounds`` instead of the family's (a pool's
        wait time gets its own timeout as a bound, see the Prometheus tracker)."""
        child = self._children.get(values)
        if child is None:
            with self._lock:
                child = self._children.get(values)
                if child is None:
                    own = None if bounds is None else tuple(float(b) for b in bounds)
                    child = HistogramChild(self, values, own)
                    self._children[values] = child
        return child

    def remove_matching(self, labels: Mapping[str, str]) -> None:
        """Drop every child whose labels include ``labels`` (all series of one pool)."""
        positions = [(self.labelnames.index(k), v) for k, v in labels.items()]
        with self._lock:
            for key in [k for k in self._children if all(k[i] == v for i, v in positions)]:
                del self._children[key]

    def after_fork(self) -> None:
        """In a child after ``fork()``: a lock another thread held at the fork stays held."""
        self._lock = threading.Lock()

    def children(self) -> list[HistogramChild]:
        with self._lock:
            return list(self._children.values())

    def family(self) -> HistogramMetricFamily:
        """For prometheus_client's registry and exposition."""
        family = HistogramMetricFamily(
            self.name, self.documentation, labels=self.labelnames, unit=self.unit
        )
        for child in self.children():
            bounds = [*(floatToGoString(b) for b in child.bounds), "+Inf"]
            counts, total, exemplars = child.snapshot()
            buckets: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
            for i, (le, n) in enumerate(zip(bounds, counts, strict=True)):
                ex = exemplars.get(i)
                buckets.append((le, n, Exemplar(dict(ex[0]), ex[1], ex[2])) if ex else (le, n))
            family.add_metric(list(child.label_values), buckets, total)
        return family

    def render(self, out: list[str], *, openmetrics: bool) -> None:
        """Append this family in the text format 0.0.4, or in OpenMetrics (with exemplars)."""
        out.append(f"# HELP {self.name} {self.documentation}\n")
        out.append(f"# TYPE {self.name} histogram\n")
        if openmetrics and self.unit:
            out.append(f"# UNIT {self.name} {self.unit}\n")
        for child in self.children():
            counts, total, exemplars = child.snapshot()
            bucket_lines, count_line, sum_line = child.lines
            for i, (prefix, n) in enumerate(zip(bucket_lines, counts, strict=True)):
                ex = exemplars.get(i) if openmetrics else None
                if ex is None:
                    out.append(f"{prefix}{n}.0\n")
                else:
                    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(ex[0].items()))
                    out.append(f"{prefix}{n}.0 # {{{labels}}} {floatToGoString(ex[1])} {ex[2]}\n")
            out.append(f"{count_line}{counts[-1]}.0\n")
            out.append(f"{sum_line}{floatToGoString(total)}\n")


_local = threading.local()


class rendering_elsewhere:
    """While active in this thread, :class:`HistogramCollector` yields nothing: poolwatch's
    exporter is writing these families itself and lets prometheus_client write the rest."""

    def __enter__(self) -> None:
        _local.active = True

    def __exit__(self, *exc: object) -> None:
        _local.active = False


class HistogramCollector(Collector):
    """poolwatch's histogram families in a prometheus_client registry."""

    def __init__(self, families: Sequence[Histogram]) -> None:
        self.families = tuple(families)

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(h.name, h.documentation, unit=h.unit) for h in self.families]

    def collect(self) -> Iterable[Metric]:
        # A scrape is a safe point to drop the series of engines the application dropped.
        run_deferred()
        if getattr(_local, "active", False):
            return []
        return [h.family() for h in self.families]
