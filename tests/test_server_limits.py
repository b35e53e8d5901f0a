"""Issue #16: the database server's connection ceiling, read by the pool (real servers only)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import sqlalchemy
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import poolwatch
from poolwatch.core import server_probe
from tests.support.pools import Reader
from tests.support.services import ThrowawayCluster, unavailable


@pytest.fixture(scope="module")
def small_server() -> Iterator[ThrowawayCluster]:
    """max_connections=20, superuser_reserved_connections=3; a role `limited` with CONNECTION
    LIMIT 10, a database `capped` with CONNECTION LIMIT 7, a role `blind` that cannot read
    pg_database."""
    try:
        cluster = ThrowawayCluster({"max_connections": "20", "superuser_reserved_connections": "3"})
    except Exception as e:
        unavailable(f"a throwaway PostgreSQL cluster ({e})")
        raise
    admin = create_engine(cluster.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text("CREATE ROLE limited LOGIN CONNECTION LIMIT 10"))
        c.execute(text("CREATE ROLE blind LOGIN"))
        c.execute(text("CREATE DATABASE capped CONNECTION LIMIT 7"))
        c.execute(text("REVOKE SELECT ON pg_catalog.pg_database FROM PUBLIC"))
        c.execute(text("GRANT SELECT ON pg_catalog.pg_database TO limited"))
    admin.dispose()
    try:
        yield cluster
    finally:
        cluster.destroy()


def _url(cluster: ThrowawayCluster, user: str = "postgres", db: str = "postgres") -> str:
    return f"postgresql+psycopg://{user}@127.0.0.1:{cluster.port}/{db}"


def _use(engine: sqlalchemy.Engine) -> None:
    with engine.connect() as c:
        c.execute(text("SELECT 1"))


def test_the_limit_is_max_connections_less_the_reserved_slots(small_server, make_engine, caplog) -> None:
    registry = CollectorRegistry()
    engine = make_engine(_url(small_server), pool_size=5, max_overflow=3)
    with caplog.at_level(logging.INFO, logger="poolwatch"):
        handle = poolwatch.instrument(engine, name="fleet-a", registry=registry)
        m = Reader(registry, handle.name)
        assert m.get("poolwatch_server_connections_max") is None  # nothing read before a connect
        _use(engine)
    assert m.get("poolwatch_server_connections_max") == 17
    assert m.get("poolwatch_server_connections_limit_info", setting="max_connections", value="20") == 1
    assert (
        m.get("poolwatch_server_connections_limit_info", setting="superuser_reserved_connections", value="3")
        == 1
    )
    info = {
        s.labels["server_address"]: s.labels
        for f in registry.collect()
        if f.name == "poolwatch_pool_info"
        for s in f.samples
        if s.labels["db_client_connection_pool_name"] == "fleet-a"
    }
    assert info["127.0.0.1"]["server_port"] == str(small_server.port)
    assert info["127.0.0.1"]["db_namespace"] == "postgres"
    lines = [r.getMessage() for r in caplog.records if "may open" in r.getMessage()]
    assert lines == [
        f"poolwatch: pool 'fleet-a' may open 8 connections; 127.0.0.1:{small_server.port}/postgres "
        "allows 17 for this pool's role"
    ]


def test_a_role_limit_and_a_database_limit_are_the_smaller(small_server, make_engine) -> None:
    registry = CollectorRegistry()
    role = make_engine(_url(small_server, user="limited"))
    database = make_engine(_url(small_server, db="capped"))
    poolwatch.instrument(role, name="fleet-role", registry=registry)
    poolwatch.instrument(database, name="fleet-db", registry=registry)
    _use(role)
    _use(database)
    assert Reader(registry, "fleet-role").get("poolwatch_server_connections_max") == 10
    assert Reader(registry, "fleet-db").get("poolwatch_server_connections_max") == 7


def test_the_limit_is_read_again_after_the_interval_only(small_server, make_engine, monkeypatch) -> None:
    admin = create_engine(_url(small_server), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    registry = CollectorRegistry()
    engine = make_engine(_url(small_server, user="limited"), poolclass=NullPool)
    poolwatch.instrument(engine, name="fleet-reread", registry=registry)
    m = Reader(registry, "fleet-reread")
    try:
        _use(engine)
        assert m.get("poolwatch_server_connections_max") == 10
        with admin.connect() as c:
            c.execute(text("ALTER ROLE limited CONNECTION LIMIT 5"))
        _use(engine)  # a new connection (NullPool), within the interval: not read again
        assert m.get("poolwatch_server_connections_max") == 10
        monkeypatch.setattr(server_probe, "INTERVAL", 0.0)
        _use(engine)  # the next read was already scheduled 300 s out
        handle = poolwatch.instrumented(engine)
        assert handle is not None
        handle.source._pool.probe._next = 0.0  # type: ignore[union-attr]
        _use(engine)
        assert m.get("poolwatch_server_connections_max") == 5
    finally:
        with admin.connect() as c:
            c.execute(text("ALTER ROLE limited CONNECTION LIMIT 10"))
        admin.dispose()


def test_a_failed_read_leaves_the_series_absent_and_the_app_unaffected(
    small_server, make_engine, caplog
) -> None:
    registry = CollectorRegistry()
    engine = make_engine(_url(small_server, user="blind"), pool_size=2)
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        poolwatch.instrument(engine, name="fleet-noread", registry=registry)
        for _ in range(3):
            with engine.connect() as c:  # the connection is usable: the probe rolled back
                assert c.execute(text("SELECT 41 + 1")).scalar_one() == 42
    m = Reader(registry, "fleet-noread")
    assert m.get("poolwatch_server_connections_max") is None
    assert m.get("db_client_connection_count", db_client_connection_state="idle") == 1
    warnings = [r.getMessage() for r in caplog.records if "could not read" in r.getMessage()]
    assert len(warnings) == 1
    assert "InsufficientPrivilege" in warnings[0]
    assert "permission denied" not in warnings[0]
    assert "blind" not in warnings[0]  # the user name


def test_server_limits_false_turns_the_read_off(small_server, make_engine) -> None:
    registry = CollectorRegistry()
    engine = make_engine(_url(small_server))
    poolwatch.instrument(engine, name="fleet-off", registry=registry, server_limits=False)
    _use(engine)
    assert Reader(registry, "fleet-off").get("poolwatch_server_connections_max") is None


def test_other_databases_have_no_limit_series(make_engine) -> None:
    registry = CollectorRegistry()
    engine = make_engine("sqlite://")
    poolwatch.instrument(engine, name="fleet-sqlite", registry=registry)
    _use(engine)
    assert Reader(registry, "fleet-sqlite").get("poolwatch_server_connections_max") is None


def test_mariadb_max_connections(make_engine) -> None:
    url = "mysql+pymysql://root@127.0.0.1:3306/test"
    try:
        probe = create_engine(url, poolclass=NullPool)
        with probe.connect() as c:
            expected = int(c.execute(text("SELECT @@max_connections")).scalar_one())
            per_user = int(c.execute(text("SELECT @@max_user_connections")).scalar_one())
        probe.dispose()
    except Exception as e:
        unavailable(f"MariaDB at 127.0.0.1:3306 ({type(e).__name__})")
        return
    registry = CollectorRegistry()
    engine = make_engine(url)
    poolwatch.instrument(engine, name="fleet-mariadb", registry=registry)
    _use(engine)
    want = min(expected, per_user) if per_user > 0 else expected
    assert Reader(registry, "fleet-mariadb").get("poolwatch_server_connections_max") == want


def test_application_name_names_connections_after_the_pool(small_server, make_engine) -> None:
    registry = CollectorRegistry()
    ours = make_engine(_url(small_server), poolclass=NullPool)
    theirs = make_engine(
        _url(small_server), poolclass=NullPool, connect_args={"application_name": "set-by-app"}
    )
    poolwatch.instrument(ours, name="orders-app", registry=registry, application_name=True)
    poolwatch.instrument(theirs, name="orders-theirs", registry=registry, application_name=True)
    with ours.connect() as c:
        assert c.execute(text("SHOW application_name")).scalar_one() == "orders-app"
    with theirs.connect() as c:
        assert c.execute(text("SHOW application_name")).scalar_one() == "set-by-app"
    poolwatch.uninstrument(ours)
    with ours.connect() as c:  # uninstrument removes the wrapper too
        assert c.execute(text("SHOW application_name")).scalar_one() == ""


def test_a_bad_application_name_is_refused(make_engine) -> None:
    with pytest.raises(ValueError, match="application_name accepts true"):
        poolwatch.instrument(make_engine("sqlite://"), application_name="x" * 64)
