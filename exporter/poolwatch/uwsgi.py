"""uWSGI (processes mode): one scrape shows every worker's pools.

One line in your WSGI module (uWSGI loads it in the master before it forks the workers, unless
``lazy-apps`` is set)::

    import poolwatch.uwsgi

``PROMETHEUS_MULTIPROC_DIR`` is set to a private directory if it is not set (uWSGI's master runs
no Python at exit, so a small process removes it once the master and every worker have exited);
each worker writes its last counts when it exits (``uwsgi.atexit``); a worker that dies drops out
of the gauges at the next scrape (poolwatch checks that each process is alive; uWSGI has no Python
hook in the master for a worker's death). With ``POOLWATCH_PORT`` one worker serves the
aggregated view of all of them, and another takes the port over if that one dies (within a few
seconds). Needs ``enable-threads`` (poolwatch's sampler is a thread: without it no Python thread
runs in a worker).

poolwatch starts no thread in the master (its sampler is held there, and each worker starts its
own after the fork), so a pool the master instrumented before the fork writes nothing. This is not
a choice: uWSGI forks the first worker holding the GIL, then releases it in the master for good
(``uwsgi_python_master_fixup``) and forks every later worker without taking it again (unless
``py-call-uwsgi-fork-hooks`` is set). A Python thread of the master, waiting for the GIL while the
master loaded the app, takes it at once, so the next worker is forked with the GIL held by a thread
it does not have: it waits for it forever, before it accepts a single request, and does not exit
when the master stops it (unbit/uwsgi #1149, #2387). Your own threads started in the master (the
background clients of monitoring tools, at import) do the same: start them in a
``uwsgidecorators.postfork`` function.
"""

from __future__ import annotations

import os

from poolwatch.backends.multiprocess import SERVED_BY_MASTER, service
from poolwatch.core import lifecycle
from poolwatch.core.errors import logger
from poolwatch.core.sampler import sampler

__all__: list[str] = []

_USER_DIR = "PROMETHEUS_MULTIPROC_DIR" in os.environ  # before prepare_master() may set it
service.prepare_master()
# No master serves here (see above): the workers share the port.
os.environ.pop(SERVED_BY_MASTER, None)

try:
    import uwsgi
except ImportError:  # imported outside uWSGI (tests, tools): nothing to hook
    uwsgi = None
try:
    from uwsgidecorators import postfork
except Exception:  # without --master it raises a bare Exception, not ImportError
    postfork = None
if uwsgi is not None and postfork is None:
    logger.warning(
        "poolwatch: uWSGI runs without --master, which poolwatch.uwsgi needs (its post-fork "
        "hook); the application runs on, each process's metrics are its own"
    )
elif uwsgi is not None and uwsgi.worker_id() > 0 and not _USER_DIR:
    # lazy-apps: every worker imports the application itself, after the fork, so each would
    # make a private directory of its own and serve only its own numbers as the service's.
    logger.warning(
        "poolwatch: uWSGI loads the application in each worker (lazy-apps), so poolwatch cannot "
        "make one directory for all of them; set PROMETHEUS_MULTIPROC_DIR in uWSGI's environment "
        "(env = PROMETHEUS_MULTIPROC_DIR=/run/yourapp/metrics, an empty directory) for one "
        "scrape of the whole service"
    )
if uwsgi is not None and postfork is not None:
    service.remove_after_the_service()
    _previous = getattr(uwsgi, "atexit", None)

    def _at_exit() -> None:  # in a worker (uWSGI's master runs no atexit handler)
        service.flush_now()
        if callable(_previous):
            _previous()

    uwsgi.atexit = _at_exit

    if uwsgi.worker_id() == 0:  # the master (or, without --master, the first worker-to-be)
        sampler.hold()

    def _post_fork() -> None:
        # uWSGI forks without Python's at-fork handlers unless py-call-osafterfork is set.
        lifecycle.ensure_fork_handled()
        # Without --master the process that loaded the app becomes worker 1 unforked.
        sampler.release()

    postfork(_post_fork)
