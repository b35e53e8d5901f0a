"""One background thread per process for poolwatch's periodic work.

The leak watcher's scans and the multiprocess backend's writes (gauges sampled from
:class:`~poolwatch.core.state.PoolState`, histogram buckets flushed into prometheus_client's
files) are jobs here, so a process runs one poolwatch thread however many pools and backends it
has, and the hot path never does this work. The thread is a daemon, started by the first job and
ended when the last one goes; after ``fork()`` the child starts its own (the parent's thread does
not exist there, and a child must never believe it runs). Jobs that must also run when the
process exits (a last flush) say so, and run from ``atexit``.

A process may be held (:meth:`Sampler.hold`): it starts no thread and runs no job, and its forked
children run them. A uWSGI master is held (see :mod:`poolwatch.uwsgi`): any Python thread running
there when it forks a worker can leave that worker waiting for the GIL forever.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable

from poolwatch.core import lifecycle

__all__ = ["Job", "Sampler", "sampler"]


class Job:
    """``run(now)`` every ``interval()`` seconds (read before each wait, so it may change)."""

    def __init__(
        self,
        name: str,
        run: Callable[[float], None],
        interval: Callable[[], float],
        *,
        at_exit: bool = False,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.name = name
        self.run = run
        self.interval = interval
        self.at_exit = at_exit
        self.on_error = on_error
        self.due = 0.0


class Sampler:
    def __init__(self) -> None:
        self._jobs: list[Job] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._exiting = False
        self._held_pid: int | None = None

    def add(self, job: Job) -> None:
        with self._lock:
            if job not in self._jobs:
                self._jobs.append(job)
            job.due = 0.0
            self._ensure_thread()
        self._wake.set()

    def remove(self, job: Job) -> None:
        with self._lock:
            if job in self._jobs:
                self._jobs.remove(job)
        self._wake.set()

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs)

    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def hold(self) -> None:
        """Start no thread in this process and run no job here, at exit included (the thread
        running now ends at its next pass); a child forked from it is not held."""
        with self._lock:
            self._held_pid = os.getpid()
        self._wake.set()

    def release(self) -> None:
        """Undo :meth:`hold` in this process: the thread starts if there are jobs."""
        with self._lock:
            if self._held_pid == os.getpid():
                self._held_pid = None
                self._ensure_thread()
        self._wake.set()

    def held(self) -> bool:
        return self._held_pid == os.getpid()

    def wake(self) -> None:
        """Run the due jobs now (a new pool's first gauges need not wait a whole interval)."""
        self._wake.set()

    def run_now(self, now: float | None = None) -> None:
        """Run every job once, in the calling thread (at exit, and for tests)."""
        t = time.monotonic() if now is None else now
        for job in self.jobs():
            _run(job, t)

    def _ensure_thread(self) -> None:
        # Called with the lock held.
        if self._exiting or self.held():
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._loop, name="poolwatch-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                jobs = list(self._jobs)
                if not jobs or self._exiting or self.held():
                    self._thread = None
                    return
            now = time.monotonic()
            for job in jobs:
                if job.due <= now:
                    _run(job, now)
                    job.due = now + max(job.interval(), 0.01)
            next_due = min(job.due for job in jobs)
            self._wake.wait(max(0.0, next_due - time.monotonic()))
            if self._wake.is_set():
                self._wake.clear()
                for job in self.jobs():
                    job.due = 0.0

    def _after_fork_in_child(self) -> None:
        # The parent's thread was not copied; its lock may have been held by it mid-pass.
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        with self._lock:
            for job in self._jobs:
                job.due = 0.0
            if self._jobs:
                self._ensure_thread()

    def _at_exit(self) -> None:
        with self._lock:
            self._exiting = True
            jobs = [] if self.held() else [j for j in self._jobs if j.at_exit]
        now = time.monotonic()
        for job in jobs:
            _run(job, now)


def _run(job: Job, now: float) -> None:
    try:
        job.run(now)
    except Exception as e:
        if job.on_error is not None:
            try:
                job.on_error(e)
            except Exception:
                pass


sampler = Sampler()
"""The process's sampler."""

# A restart: it runs after the handlers that reset what the parent left (the pools' state), so the
# child's first pass never reads the parent's connections.
lifecycle.after_fork_in_child(sampler._after_fork_in_child, restart=True)
atexit.register(sampler._at_exit)
