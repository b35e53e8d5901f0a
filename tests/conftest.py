from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from tests.support.builds import BUILDS, use_build
from tests.support.services import ThrowawayCluster, pg_url, unavailable


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the real PostgreSQL (psycopg 3 driver)."""
    url = pg_url()
    if url is None:
        unavailable("PostgreSQL at POOLWATCH_TEST_PG / 127.0.0.1:5432")
    assert url is not None
    return url


@pytest.fixture
def throwaway_pg() -> Iterator[ThrowawayCluster]:
    """A private PostgreSQL cluster the test may stop, restart or kill."""
    try:
        cluster = ThrowawayCluster()
    except Exception as e:
        unavailable(f"a throwaway PostgreSQL cluster ({e})")
        raise
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def make_engine() -> Iterator[object]:
    """``make_engine(url, **create_engine_kwargs)``; every engine is uninstrumented and disposed."""
    from tests.support.pools import engines

    with engines() as make:
        yield make


@pytest.fixture
def engines(postgres_url: str) -> Iterator[object]:
    """``engines(url=None, **create_engine_kwargs)``: engines on the real PostgreSQL (or ``url``);
    every engine is uninstrumented and disposed at the end."""
    from tests.support.pools import engines as factory

    with factory() as make:
        yield lambda url=None, **kwargs: make(url or postgres_url, **kwargs)


@pytest.fixture(params=BUILDS)
def build(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test under each build of the hot path: "compiled", then "interpreted"."""
    use_build(monkeypatch, request.param)
    return str(request.param)
