"""Tearing down what the application dropped, and what a ``fork()`` leaves behind.

``weakref.finalize`` callbacks run inside the garbage collector, which may start inside any
allocation, including inside prometheus_client or poolwatch code that holds a (non-reentrant)
lock: a finalizer that removed series there would deadlock its own thread. So finalizers only
queue the work (``list.append`` takes no lock) and it runs at the next safe point: an
``instrument()``/``uninstrument()`` call, a scrape, or a pass of the sampler.

After ``fork()`` only the forking thread exists in the child: poolwatch's background threads
(the sampler, an HTTP exporter) are gone, and the pools' state still holds the parent's
checked-out connections and waiting callers, which the child will never return. The handlers
registered here run in the child (``os.register_at_fork``): first those that reset inherited
state, then those that restart threads, so no restarted thread reads the parent's state.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable

from poolwatch.core.errors import logger

__all__ = [
    "after_fork_in_child", "defer", "ensure_fork_handled", "forked", "is_worker_process",
    "run_deferred",
    "warn_single_process_view",
]  # fmt: skip

_queue: list[Callable[[], None]] = []
_resets: list[Callable[[], None]] = []
_restarts: list[Callable[[], None]] = []
_forked_from: int | None = None
_handled_pid = os.getpid()
_warned = False

PREFORK_ADVICE = (
    "gunicorn: `gunicorn -c python:poolwatch.gunicorn ...` (or `from poolwatch.gunicorn import *` "
    "in your gunicorn.conf.py); Celery: `import poolwatch.celery`; uWSGI: `import "
    "poolwatch.uwsgi`; any other pre-fork server: set PROMETHEUS_MULTIPROC_DIR to an empty "
    "directory before it starts and serve prometheus_client's MultiProcessCollector (README, "
    "'Pre-fork servers')"
)


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


def after_fork_in_child(handler: Callable[[], None], *, restart: bool = False) -> None:
    """Run ``handler`` in the child after every ``fork()``: resets first, then restarts."""
    (_restarts if restart else _resets).append(handler)


def forked() -> int | None:
    """The pid of the parent this process was forked from (without exec), or None."""
    return _forked_from


# Imported in the processes of these pre-fork servers (a worker imports the application after
# the fork, when poolwatch's fork handler was not registered yet).
_PREFORK_SERVER_MODULES = ("gunicorn.arbiter", "uwsgi", "billiard.pool")


def is_worker_process() -> bool:
    """Whether this process is one of several that serve one service: forked (after poolwatch
    was imported), started by ``multiprocessing`` (uvicorn's workers are spawned), or running
    inside a pre-fork server (gunicorn, uWSGI, Celery's prefork pool)."""
    return (
        _forked_from is not None
        or multiprocessing.parent_process() is not None
        or any(name in sys.modules for name in _PREFORK_SERVER_MODULES)
    )


def warn_single_process_view() -> None:
    """Log, once per process, that this worker's metrics are not the service's."""
    global _warned
    if _warned:
        return
    _warned = True
    logger.warning(
        "poolwatch: this process (pid %d) runs under a pre-fork server and prometheus_client's "
        "multiprocess mode is not set up, so poolwatch's metrics here are one process's alone, "
        "and a scrape shows one random worker's numbers as the service's. To see the whole "
        "service: %s",
        os.getpid(),
        PREFORK_ADVICE,
    )


def ensure_fork_handled() -> None:
    """Run the fork handlers now unless they ran in this process: for servers that fork without
    running Python's at-fork handlers (uWSGI, unless ``py-call-osafterfork`` is set)."""
    if _handled_pid != os.getpid():
        _in_child()


def _in_child() -> None:
    global _forked_from, _handled_pid
    _forked_from = os.getppid()
    _handled_pid = os.getpid()
    for handler in [*_resets, *_restarts]:
        try:
            handler()
        except Exception:  # a fork handler must never break the child
            logger.exception("poolwatch: resetting after fork failed (%r)", handler)


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_in_child)
