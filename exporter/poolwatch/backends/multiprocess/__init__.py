"""prometheus_client multiprocess mode: one scrape shows the whole pre-fork service.

:mod:`.tracker` writes each process's series into ``PROMETHEUS_MULTIPROC_DIR`` from the sampler;
:mod:`.files` keeps the directory to the live processes' files; :mod:`.collector` reads it;
:mod:`.serving` serves it once for the whole service.
"""

from poolwatch.backends.multiprocess.collector import ServiceCollector, service_registry
from poolwatch.backends.multiprocess.files import directory, mark_process_dead, sweep
from poolwatch.backends.multiprocess.serving import (
    SERVED_BY_MASTER,
    serve_from_a_worker,
    serve_service,
)
from poolwatch.backends.multiprocess.tracker import MultiprocessTracker, enabled

__all__ = [
    "SERVED_BY_MASTER",
    "MultiprocessTracker",
    "ServiceCollector",
    "directory",
    "enabled",
    "mark_process_dead",
    "serve_from_a_worker",
    "serve_service",
    "service_registry",
    "sweep",
]
