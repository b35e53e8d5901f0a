"""What a pre-fork server's master does for poolwatch, whichever server it is.

Before the first worker is forked: make sure ``PROMETHEUS_MULTIPROC_DIR`` is set (a private
directory if the user set none, removed when the master exits), and, with ``POOLWATCH_PORT``,
promise the workers that the master serves the service's ``/metrics`` (so none of them tries).
When a worker exits: its live gauges go and its counts join the archive. When a worker is about to
exit: its last values are written. :mod:`poolwatch.gunicorn`, :mod:`poolwatch.celery` and
:mod:`poolwatch.uwsgi` call these from their servers' hooks.

A master that runs no Python at exit (uWSGI's) cannot remove its private directory itself:
:func:`remove_after_the_service` leaves that to a small process that waits on a pipe whose write
end the master and every worker forked from it hold, so it reads the end of the pipe when the last
process of the service has exited, however it exited.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from typing import Any, cast

from poolwatch.backends.multiprocess.files import directory, mark_process_dead, sweep
from poolwatch.backends.multiprocess.serving import SERVED_BY_MASTER, serve_service
from poolwatch.core.config import resolve_settings
from poolwatch.core.errors import logger
from poolwatch.core.sampler import sampler

__all__ = [
    "PRIVATE_DIR_PREFIX",
    "flush_now",
    "prepare_master",
    "remove_after_the_service",
    "serve_from_master",
    "stop_master",
    "worker_exited",
]

PRIVATE_DIR_PREFIX = "poolwatch-multiproc-"
PRIVATE_DIR_ENV = "POOLWATCH_PRIVATE_MULTIPROC_DIR"
"""The private directory a master made, in the environment a re-executed master inherits."""
_private: str | None = None
_master_pid: int | None = None
_janitor: subprocess.Popen[bytes] | None = None
_janitor_pipe: int | None = None


def prepare_master() -> str:
    """Set up the multiprocess directory (returns it) and, if ``POOLWATCH_PORT`` is set, mark
    the aggregated view as the master's job. Call before any worker is forked."""
    global _private, _master_pid
    path = directory()
    # A master that re-executed itself (uWSGI's reload, gunicorn's USR2) inherits the private
    # directory of its former self, which goes when that one's processes are gone: a new one.
    if path is None or path == os.environ.get(PRIVATE_DIR_ENV):
        path = _private = tempfile.mkdtemp(prefix=PRIVATE_DIR_PREFIX)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[PRIVATE_DIR_ENV] = path
        _rebind_prometheus_client()
    else:
        os.makedirs(path, exist_ok=True)
    _master_pid = os.getpid()
    settings = resolve_settings({})  # a bad POOLWATCH_* value fails the server's start
    if settings.port is not None:
        os.environ[SERVED_BY_MASTER] = str(_master_pid)
    return path


def _rebind_prometheus_client() -> None:
    """prometheus_client chose its value class when it was imported, before the directory
    existed: choose again, so the application's own metrics created from now on (in the
    workers, or in the master with ``--preload``) are multiprocess ones too."""
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = cast(Any, values).get_value_class()


def serve_from_master() -> None:
    """With ``POOLWATCH_PORT``: serve every worker's series, once, from this (master) process.
    Never raises: a port that is taken is logged, the server runs on."""
    settings = resolve_settings({})
    if settings.port is None:
        return
    sweep()  # a previous run's dead processes, before the first scrape
    try:
        serve_service(settings.addr, settings.port)
    except OSError as e:
        logger.error(
            "poolwatch: cannot serve the service's metrics on %s:%d (%s); the server runs "
            "without poolwatch's HTTP exporter",
            settings.addr, settings.port, e,
        )  # fmt: skip


def worker_exited(pid: int) -> None:
    """In the master, when a worker has exited (however: ``kill -9`` included)."""
    try:
        mark_process_dead(pid)
    except Exception as e:
        logger.warning("poolwatch: cleaning up after worker %d failed: %s", pid, e)


def flush_now() -> None:
    """In a worker about to exit: write its last values (the at-exit jobs of the sampler).
    Nothing in a held process (a uWSGI master: its pools never write)."""
    if sampler.held():
        return
    for job in sampler.jobs():
        if job.at_exit:
            job.run(0.0)


def stop_master() -> None:
    """In the master, at exit: remove the private directory if poolwatch made it."""
    global _private
    if _private is not None and os.getpid() == _master_pid:
        with contextlib.suppress(OSError):
            shutil.rmtree(_private)
        _private = None


def remove_after_the_service() -> None:
    """In the master, before any worker is forked: have the private directory (if poolwatch made
    it) removed once this process and every process forked from it have exited. Never raises."""
    global _janitor, _janitor_pipe
    if _private is None or _janitor is not None:
        return
    read_end, write_end = os.pipe()
    try:
        # cat returns at end of file: when the last holder of the write end has gone.
        _janitor = subprocess.Popen(
            ["/bin/sh", "-c", 'cat >/dev/null; exec rm -rf -- "$1"', "poolwatch-cleanup", _private],
            stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=True, start_new_session=True,  # the server's process group may be killed
        )  # fmt: skip
    except OSError as e:
        os.close(write_end)
        logger.warning("poolwatch: %s will not be removed at exit (%s)", _private, e)
    else:
        _janitor_pipe = write_end  # held open until exit: this process and each fork inherit it
    finally:
        os.close(read_end)
