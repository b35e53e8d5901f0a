"""A WSGI app for the pre-fork tests: one engine per worker (or one per master with --preload),
instrumented at import, as most Flask apps do.

``/hold?key=K`` checks a connection out and waits on PostgreSQL advisory lock K (the test holds
it), so the test decides how long connections stay checked out; ``/query`` runs one statement.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs

import sqlalchemy

import poolwatch

PROBE = "SELECT 1 FROM pg_database LIMIT 1"

engine = sqlalchemy.create_engine(
    os.environ["POOLWATCH_TEST_PG"],
    pool_size=int(os.environ.get("PW_POOL_SIZE", "5")),
    max_overflow=0,
    connect_args={"application_name": f"{os.environ['PW_APP']}-{os.getpid()}"},
)
poolwatch.instrument(engine, name=os.environ["PW_POOL_NAME"])


def app(environ: dict, start_response):  # type: ignore[no-untyped-def,type-arg]
    path = environ.get("PATH_INFO", "/")
    if path == "/hold":
        key = int(parse_qs(environ.get("QUERY_STRING", ""))["key"][0])
        with engine.connect() as c:
            c.exec_driver_sql(f"SET application_name = '{os.environ['PW_APP']}-{os.getpid()}'")
            c.exec_driver_sql(f"SELECT pg_advisory_lock_shared({key})")
            c.exec_driver_sql(f"SELECT pg_advisory_unlock_shared({key})")
        body = str(os.getpid()).encode()
    elif path == "/query":
        with engine.connect() as c:
            c.exec_driver_sql(PROBE)
        body = str(os.getpid()).encode()
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
