"""The WSGI app under uWSGI: poolwatch's one line first, then the app."""

import poolwatch.uwsgi  # noqa: F401  (the one line, before the engine is instrumented)
from tests.prefork.wsgi_app import app

__all__ = ["app"]
