"""Tearing down the instrumentation of engines the application dropped.

``weakref.finalize`` callbacks run inside the garbage collector, which may start inside any
allocation, including inside prometheus_client or poolwatch code that holds a (non-reentrant)
lock: a finalizer that removed series there would deadlock its own thread. So finalizers only
queue the work (``list.append`` takes no lock) and it runs at the next safe point: an
``instrument()``/``uninstrument()`` call, a scrape, or a pass of the leak watcher.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["defer", "run_deferred"]

_queue: list[Callable[[], None]] = []


def defer(teardown: Callable[[], None]) -> None:
    """Queue ``teardown``; safe to call from a finalizer."""
    _queue.append(teardown)


def run_deferred() -> None:
    """Run what finalizers queued. Never call this from a finalizer."""
    while _queue:
        try:
            teardown = _queue.pop()
        except IndexError:  # another thread took the last one
            return
        teardown()
