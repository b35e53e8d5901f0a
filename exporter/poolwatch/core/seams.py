"""What every source's seams share, whatever the pool library: wrappers put on an instance
(marked with their owner, and removed only while they are still the outermost), and the
accounting of a checkout that failed.

The compiled checkout wrappers (:func:`poolwatch.core.hotpath.checkout_wrapper`) call
:meth:`CheckoutAccounting._checkout_failed` when the pool's own call raises: never on a checkout
that succeeds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from poolwatch.core import build as wrappers
from poolwatch.core.instrumentation import WaitHook
from poolwatch.core.leaks import LeakDetector
from poolwatch.core.state import PoolLimits, PoolState
from poolwatch.core.tracker import PENDING_LIMIT, PoolTracker

__all__ = ["CheckoutAccounting", "install_wrappers", "is_ours", "remove_wrappers"]


def install_wrappers(
    target: object, owner: object, replaced: Iterable[tuple[str, Callable[..., Any], Any]]
) -> None:
    """Put each ``(method, original, wrapper)`` on the instance ``target``, marked as ``owner``'s
    (``_poolwatch``) and pointing at what it wraps (``__wrapped__``)."""
    for method, original, wrapper in replaced:
        wrapper.__wrapped__ = original
        wrapper._poolwatch = owner
        setattr(target, method, wrapper)


def is_ours(wrapper: object, owner: object) -> bool:
    return getattr(wrapper, "_poolwatch", None) is owner


def remove_wrappers(target: object, owner: object, methods: Iterable[str]) -> None:
    """Take ``owner``'s wrappers off ``target``. One that something else wrapped again after us
    stays in place, inert (its switch is off), so the other wrapper keeps working."""
    attributes = target.__dict__
    for method in methods:
        if is_ours(attributes.get(method), owner):
            del attributes[method]


class CheckoutAccounting:
    """A pool's failed checkouts: the waiting slot given back, a timeout counted with its wait,
    any other failure counted as the pool library says (:meth:`_checkout_error`). Holds what
    the compiled checkout wrapper reads of its pool's instrumentation when it is made."""

    def __init__(
        self,
        state: PoolState,
        tracker: PoolTracker,
        leaks: LeakDetector | None,
        on_wait: WaitHook | None,
    ) -> None:
        self.state = state
        self.tracker = tracker
        self.leaks = leaks
        # Called after every checkout with (start, end, error) when tracing wants wait spans.
        self.on_wait = on_wait
        self._lock = threading.Lock()
        # What the installed wrappers read on every call: ``switch.on`` is True while installed.
        self.switch = wrappers.Switch()

    def limits(self) -> PoolLimits:
        """The pool's configuration now."""
        raise NotImplementedError

    def _checkout_error(self, error: BaseException) -> None:
        """Count a checkout that raised ``error`` without timing out."""
        raise NotImplementedError

    def _checkout_failed(
        self, t0: float, slot: int, error: BaseException, *, timed_out: bool
    ) -> None:
        t1 = time.perf_counter()
        try:
            self.state.waiting.leave(slot)
            if timed_out:
                # A wait with no checkin to follow (pool_timeout=0 can produce them in a loop).
                self.tracker.wait(self._timed_out_wait(t1 - t0))
                if self.tracker.pending() > PENDING_LIMIT:
                    self.tracker.drain()
                self.tracker.timed_out()
            else:
                self._checkout_error(error)
            if self.on_wait is not None:
                self.on_wait(t0, t1, error)
        except Exception as e:
            self.state.errors.report("checkout", e)

    def _timed_out_wait(self, elapsed: float) -> float:
        """A timed-out wait lasts the pool's timeout plus a few milliseconds of scheduling,
        which would put every timeout in the bucket *above* the timeout and make a p99 read as,
        say, 59 s for a 30 s timeout. Recorded as the timeout itself, it lands in the bucket
        whose upper bound is the timeout (the default buckets include the usual timeouts)."""
        timeout = self.limits().timeout
        if timeout is not None and timeout <= elapsed <= timeout + 1.0:
            return timeout
        return elapsed
