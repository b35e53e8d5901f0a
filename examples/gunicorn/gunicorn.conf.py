"""gunicorn with poolwatch: one scrape of POOLWATCH_PORT shows the whole service.

    POOLWATCH_PORT=9464 gunicorn -c examples/gunicorn/gunicorn.conf.py app:app

Your own settings go here as usual; the one import line below adds poolwatch's hooks (a private
prometheus_client multiprocess directory when PROMETHEUS_MULTIPROC_DIR is unset, the master
serving the sum of every worker on POOLWATCH_PORT, dead workers' files swept; README, "Pre-fork
servers"). If you define a hook poolwatch also defines (post_fork, child_exit, ...), call
poolwatch's from yours.
"""

from poolwatch.gunicorn import *  # noqa: F403  # the one line

workers = 2
bind = "127.0.0.1:8000"
