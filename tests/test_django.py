"""Django 5.1+: ``"poolwatch.django"`` in INSTALLED_APPS instruments the pool of every alias with
OPTIONS["pool"], under the alias's name, on the real PostgreSQL (tests/django_project)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

django = pytest.importorskip("django")

from tests.support.pools import Reader, server_connections  # noqa: E402
from tests.support.psycopg import until  # noqa: E402


def counts(m: Reader) -> tuple[float | None, float | None]:
    return tuple(m.get("db_client_connection_count", db_client_connection_state=state, role="web")
                 for state in ("used", "idle"))  # type: ignore[return-value]


def get(path: str) -> int:
    """One request through Django's real WSGI handler, so its request_finished handling (which
    returns the connection to the pool) runs as in production; django.test.Client keeps
    connections open on purpose."""
    from wsgiref.util import setup_testing_defaults

    from django.core.handlers.wsgi import WSGIHandler

    environ: dict[str, Any] = {"PATH_INFO": path, "HTTP_HOST": "testserver"}
    setup_testing_defaults(environ)
    status: list[str] = []
    response = WSGIHandler()(environ, lambda s, h: status.append(s))
    b"".join(response)
    response.close()  # fires request_finished
    return int(status[0].split()[0])


def agree(pool: Any, m: Reader, url: str, application_name: str) -> None:
    until(lambda: pool.get_stats()["pool_available"] == pool.get_stats()["pool_size"])
    size = pool.get_stats()["pool_size"]
    assert size >= 1
    assert counts(m) == (0, size)
    assert server_connections(url, application_name) == size


@pytest.fixture(scope="module")
def project(postgres_url: str) -> Iterator[Any]:
    # Set for this module only: a DJANGO_SETTINGS_MODULE left in os.environ reaches the servers
    # later tests start (Celery's worker then loads Django settings it cannot import).
    saved = {k: os.environ.get(k) for k in ("DJANGO_SETTINGS_MODULE", "POOLWATCH_TEST_PG")}
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.django_project.settings"
    os.environ.setdefault("POOLWATCH_TEST_PG", postgres_url)
    django.setup()
    from django.conf import settings
    from django.db import connections

    import poolwatch.django

    yield settings
    for alias in ("default", "replica"):
        connections[alias].close()
        connections[alias].close_pool()
    poolwatch.django.uninstall()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_every_pooled_alias_under_its_name(project, postgres_url) -> None:
    from django.db import connections

    import poolwatch

    assert get("/tables/default") == 200
    assert get("/tables/replica") == 200
    assert get("/tables/direct") == 200
    m = Reader(project.REGISTRY, "default")
    # Django returned the connection at the end of the request. (The pool may have opened a
    # second one: Django's first getconn() can come before the pool's first connection.)
    agree(connections["default"].pool, m, postgres_url, "pw-django-default")
    assert m("db_client_connection_max", role="web") == 3
    assert m("db_client_connection_idle_min", role="web") == 1
    assert m("db_client_connection_wait_time_seconds_count", role="web") == 1
    assert m("db_client_operation_duration_seconds_count", role="web",
             db_system_name="postgresql", db_operation_name="SELECT",
             db_query_summary="SELECT pg_class", error_type="") == 1
    replica = Reader(project.REGISTRY, "replica")
    assert replica("db_client_connection_max", role="web") == 4  # psycopg_pool's defaults: 4 and 4
    assert replica("db_client_connection_use_time_seconds_count", role="web") == 1
    assert connections["direct"].pool is None
    assert poolwatch.instrumented(connections["default"].pool).name == "default"


def test_a_pool_django_recreates_is_instrumented_again(project, postgres_url) -> None:
    from django.db import connections
    first = connections["default"].pool
    connections["default"].close_pool()  # what Django does when the time zone changes
    m = Reader(project.REGISTRY, "default")
    assert counts(m) == (None, None)  # the closed pool's series are gone
    assert get("/tables/default") == 200
    assert connections["default"].pool is not first
    agree(connections["default"].pool, m, postgres_url, "pw-django-default")
    assert m("db_client_connection_wait_time_seconds_count", role="web") == 1
