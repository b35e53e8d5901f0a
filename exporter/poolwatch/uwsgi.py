"""uWSGI (processes mode): one scrape shows every worker's pools.

One line in your WSGI module (uWSGI loads it in the master before it forks the workers, unless
``lazy-apps`` is set)::

    import poolwatch.uwsgi

``PROMETHEUS_MULTIPROC_DIR`` is set to a private directory if it is not set; each worker writes
its last counts when it exits (``uwsgi.atexit``); a worker that dies drops out of the gauges at
the next scrape (poolwatch checks that each process is alive; uWSGI has no Python hook in the
master for a worker's death). The master runs no Python while it supervises, so with
``POOLWATCH_PORT`` one worker serves the aggregated view of all of them, and another takes the
port over if that one dies (within a few seconds). Needs ``enable-threads`` (poolwatch's sampler
is a thread).
"""

from __future__ import annotations

import os

from poolwatch.backends.multiprocess import SERVED_BY_MASTER, service
from poolwatch.core import lifecycle

__all__: list[str] = []

service.prepare_master()
# No master serves here (see above): the workers share the port.
os.environ.pop(SERVED_BY_MASTER, None)

try:
    import uwsgi
    from uwsgidecorators import postfork
except ImportError:  # imported outside uWSGI (tests, tools): nothing to hook
    pass
else:
    _previous = getattr(uwsgi, "atexit", None)

    def _at_exit() -> None:
        service.flush_now()
        service.stop_master()  # only in the master, which made the private directory
        if callable(_previous):
            _previous()

    uwsgi.atexit = _at_exit

    def _post_fork() -> None:
        # uWSGI forks without Python's at-fork handlers unless py-call-osafterfork is set.
        lifecycle.ensure_fork_handled()

    postfork(_post_fork)
