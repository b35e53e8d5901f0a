"""Errors inside poolwatch: logged once in a while, counted, and never raised into the app."""

from __future__ import annotations

import logging
import threading
import time
import traceback

__all__ = ["ErrorReporter", "logger", "traceback_without_messages"]

logger = logging.getLogger("poolwatch")

# One log record per component and pool per interval: an error on the hot path would otherwise
# log on every checkout and become the outage.
LOG_INTERVAL_SECONDS = 60.0


# Exported at 0 from the start, so that rate()/increase() see the first error.
COMPONENTS = (
    "checkout", "checkin", "connect", "close", "detach", "invalidate", "dispose", "statement",
    "leak_detection", "collect", "uninstrument", "tracing",
)  # fmt: skip


class ErrorReporter:
    """Counts internal errors per component; the metrics backends export the counts."""

    def __init__(self, pool_name: str) -> None:
        self.pool_name = pool_name
        self.counts: dict[str, int] = dict.fromkeys(COMPONENTS, 0)
        self._last_logged: dict[str, float] = {}
        self._lock = threading.Lock()

    def report(self, component: str, exc: BaseException) -> None:
        try:
            now = time.monotonic()
            with self._lock:
                self.counts[component] = self.counts.get(component, 0) + 1
                last = self._last_logged.get(component)
                should_log = last is None or now - last >= LOG_INTERVAL_SECONDS
                if should_log:
                    self._last_logged[component] = now
            if should_log:
                logger.error(
                    "poolwatch: internal error in %s for pool %r (the application is not affected;"
                    " further errors of this kind are counted in "
                    "poolwatch_instrumentation_errors_total and logged at most every %.0f s)\n%s",
                    component,
                    self.pool_name,
                    LOG_INTERVAL_SECONDS,
                    traceback_without_messages(exc),
                )
        except Exception:
            pass


def traceback_without_messages(exc: BaseException, limit: int = 5) -> str:
    """The traceback of ``exc`` and of the exceptions it was raised from or while handling, with
    each exception's type but not its message: poolwatch's code runs inside the application's
    ``except`` blocks, and the exception being handled there is a database error whose message
    quotes row values or names the user (``Key (email)=(...) already exists``)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < limit and all(current is not c for c in chain):
        chain.append(current)
        cause = current.__cause__
        if cause is None and not current.__suppress_context__:
            cause = current.__context__
        current = cause
    parts: list[str] = []
    for i, e in enumerate(reversed(chain)):
        if i:
            parts.append("\nwhile handling the above, this was raised:\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(e.__traceback__))
        cls = type(e)
        parts.append(f"{cls.__module__}.{cls.__qualname__} (message withheld)\n")
    return "".join(parts).rstrip("\n")
