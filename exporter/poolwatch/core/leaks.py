"""Leak detection: connections held longer than ``leak_threshold`` seconds.

Checkout times are already kept for the hold-time histogram, so finding leaks is a scan of the
checked-out records by a job of the process's one background thread (:mod:`poolwatch.core.sampler`),
off the hot path. What costs on the hot path
is remembering *who* checked a connection out: walking the stack at every checkout (about 3 µs),
which is why leak detection is off by default and the stack capture can be turned off
(``leak_stacks=False``) when only the counts are wanted.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
import weakref
from typing import Any

from poolwatch.core import lifecycle
from poolwatch.core.errors import logger
from poolwatch.core.lifecycle import run_deferred
from poolwatch.core.sampler import Job, sampler
from poolwatch.core.state import PoolState
from poolwatch.core.tracker import PoolTracker

__all__ = ["LeakDetector"]

_STACK_LIMIT = 40
# Frames of these packages say nothing about who checked the connection out: the pool library
# and poolwatch's own layers (not its demo, whose frames are the application's there).
_SKIP = (
    "/sqlalchemy/", "/psycopg_pool/", "/poolwatch/core/", "/poolwatch/sources/",
    "/poolwatch/backends/", "/poolwatch/sql/", "/contextlib.py",
)  # fmt: skip


def _capture_stack() -> tuple[tuple[Any, int], ...]:
    frames: list[tuple[Any, int]] = []
    f = sys._getframe(2)
    while f is not None and len(frames) < _STACK_LIMIT:
        frames.append((f.f_code, f.f_lineno))
        f = f.f_back  # type: ignore[assignment]
    return tuple(frames)


def _format_stack(frames: tuple[tuple[Any, int], ...]) -> str:
    summary = traceback.StackSummary.from_list(
        [
            (code.co_filename, lineno, code.co_name, None)
            for code, lineno in reversed(frames)
            if not any(s in code.co_filename for s in _SKIP)
        ]
    )
    return "".join(summary.format())


class LeakDetector:
    def __init__(
        self, state: PoolState, tracker: PoolTracker, threshold: float, *, stacks: bool
    ) -> None:
        self.state = state
        self.tracker = tracker
        self.threshold = threshold
        self.capture = stacks
        self._stacks: dict[Any, tuple[tuple[Any, int], ...]] = {}

    def checked_out(self, record: Any) -> None:
        if self.capture:
            self._stacks[record] = _capture_stack()

    def checked_in(self, record: Any, t0: float | None) -> None:
        self._stacks.pop(record, None)
        if self.state.leaked and self.state.leaked.pop(record, None) is not None:
            held = time.perf_counter() - t0 if t0 is not None else float("nan")
            logger.info(
                "poolwatch: connection of pool %r returned after %.1f s (it had been reported as"
                " a possible leak)",
                self.state.name,
                held,
            )

    def scan(self, now: float) -> None:
        leaked = self.state.leaked
        for record, t0 in list(self.state.checked_out.items()):
            if now - t0 < self.threshold or record in leaked:
                continue
            leaked[record] = t0
            self.tracker.leak_detected()
            stack = self._stacks.get(record)
            where = (
                "checked out at (most recent call last):\n" + _format_stack(stack)
                if stack
                else "(stack capture is off: leak_stacks=False)"
            )
            logger.warning(
                "poolwatch: connection of pool %r held for %.1f s, longer than leak_threshold="
                "%g s; it is counted in poolwatch_connections_leaked until it is returned. %s",
                self.state.name,
                now - t0,
                self.threshold,
                where,
            )

    def start(self) -> None:
        _watcher.add(self)

    def stop(self) -> None:
        _watcher.discard(self)
        self._stacks.clear()
        self.state.leaked.clear()


class _Watcher:
    """Every detector in the process, scanned by one job on the process's sampler."""

    def __init__(self) -> None:
        self._detectors: weakref.WeakSet[LeakDetector] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._job = Job("leak_detection", self._scan, self._interval)

    def add(self, detector: LeakDetector) -> None:
        with self._lock:
            self._detectors.add(detector)
        sampler.add(self._job)

    def discard(self, detector: LeakDetector) -> None:
        with self._lock:
            self._detectors.discard(detector)
            empty = not self._detectors
        if empty:
            sampler.remove(self._job)

    def _interval(self) -> float:
        with self._lock:
            thresholds = [d.threshold for d in self._detectors]
        # A quarter of the shortest threshold, so a leak is reported at most 25% late.
        return min([1.0, *(t / 4 for t in thresholds)]) if thresholds else 1.0

    def _scan(self, _now: float) -> None:
        with self._lock:
            detectors = list(self._detectors)
        run_deferred()
        now = time.perf_counter()
        for d in detectors:
            try:
                d.scan(now)
            except Exception as e:
                d.state.errors.report("leak_detection", e)

    def _after_fork_in_child(self) -> None:
        # The parent's checkouts are not this process's (PoolState.forget_parent), nor their stacks.
        self._lock = threading.Lock()
        for d in list(self._detectors):
            d._stacks.clear()


_watcher = _Watcher()
lifecycle.after_fork_in_child(_watcher._after_fork_in_child)
