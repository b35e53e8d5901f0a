"""SIGTERM and SIGHUP end the demo as Ctrl-C does, and its cleanup is shielded from a second one,
so that its tables are dropped however it ends short of SIGKILL."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["shielded", "stop_signals"]

# SIGHUP: the terminal closed. Windows has neither it nor a SIGTERM one can handle this way.
_STOPS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def _handling(signals: tuple[int, ...], handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for these signals while inside; only the main thread may set one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def stop_signals() -> contextlib.AbstractContextManager[None]:
    """SIGTERM and SIGHUP end the demo as Ctrl-C does, so that its tables are dropped."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return _handling(_STOPS, handler)


def shielded() -> contextlib.AbstractContextManager[None]:
    """Cleanup that a second Ctrl-C (or SIGTERM) must not cut short: the tables get dropped."""

    def handler(signum: int, frame: Any) -> None:
        print("poolwatch demo: cleaning up (the workload, the tables), one moment", file=sys.stderr)

    return _handling((signal.SIGINT, *_STOPS), handler)
