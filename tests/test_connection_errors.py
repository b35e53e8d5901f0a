"""Connection failures get the same fixed error_type for every driver, from real servers.

Each case makes a real checkout fail (a throwaway PostgreSQL cluster that is full, shutting down or
stopped; the shared PostgreSQL with a role or database that does not exist; a closed port; a port
that accepts and never answers; MariaDB through PyMySQL) and reads
``poolwatch_connection_errors_total{error_type}``, which must be exactly one of the vocabulary and
never carry message text.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine, text
from sqlalchemy.pool import NullPool

import poolwatch
from poolwatch.sql.error_types import CONNECTION_ERROR_TYPES, classify_connection_error
from tests.support.pools import POOL
from tests.support.services import PG_BIN, ThrowawayCluster, free_port, unavailable

COUNTER = "poolwatch_connection_errors_total"
ROLE = "pw_connerr_app"
LIMITED = "pw_connerr_limited"


def _errors(registry: CollectorRegistry, pool: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == COUNTER and sample.labels.get(POOL) == pool and sample.value:
                out[sample.labels["error_type"]] = sample.value
    return out


def failed_checkout(
    make_engine: Callable[..., Engine], registry: CollectorRegistry, url: str, **kwargs: Any
) -> tuple[dict[str, float], BaseException]:
    """One checkout that fails on a fresh instrumented engine: its counted error types."""
    engine = make_engine(url, **kwargs)
    name = "pw-connerr-" + uuid.uuid4().hex[:8]
    poolwatch.instrument(engine, registry=registry, name=name)
    with pytest.raises(sqlalchemy.exc.DBAPIError) as raised:
        engine.connect()
    errors = _errors(registry, name)
    samples = [
        line for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")
    ]
    exposition = "\n".join(samples)
    for word in ("FATAL", "does not exist", "too many", "Connection refused", ROLE):
        assert word not in exposition
    return errors, raised.value


def _url(port: int, user: str = "postgres", database: str = "postgres", **query: str) -> str:
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return f"postgresql+psycopg://{user}@127.0.0.1:{port}/{database}" + (f"?{q}" if q else "")


def _limit_slots(cluster: ThrowawayCluster) -> None:
    """3 connection slots, one of them for superusers; a plain role, a role with a password."""
    with (cluster.data / "postgresql.conf").open("a") as f:
        f.write("max_connections = 3\nsuperuser_reserved_connections = 1\n")
    hba = cluster.data / "pg_hba.conf"
    hba.write_text(
        "host all pw_connerr_pw 127.0.0.1/32 scram-sha-256\n" + hba.read_text(encoding="utf-8")
    )
    cluster.restart()
    with psycopg.connect(_url(cluster.port).replace("+psycopg", ""), autocommit=True) as c:
        c.execute(f"CREATE ROLE {ROLE} LOGIN")
        c.execute(f"CREATE ROLE {LIMITED} LOGIN CONNECTION LIMIT 1")
        c.execute("CREATE ROLE pw_connerr_pw LOGIN PASSWORD 'right-password'")


@pytest.fixture(scope="module")
def small_pg() -> Iterator[ThrowawayCluster]:
    """One small cluster for the tests that leave it running (cluster set-up takes seconds)."""
    try:
        cluster = ThrowawayCluster()
    except Exception as e:
        unavailable(f"a throwaway PostgreSQL cluster ({e})")
        raise
    try:
        _limit_slots(cluster)
        yield cluster
    finally:
        cluster.destroy()


@contextlib.contextmanager
def holding(url: str, n: int) -> Iterator[None]:
    conns = [psycopg.connect(url.replace("+psycopg", "")) for _ in range(n)]
    try:
        yield
    finally:
        for c in conns:
            c.close()


def test_a_full_server_is_too_many_connections_not_down(small_pg, registry, make_engine) -> None:
    port = small_pg.port
    with holding(_url(port), 2):
        # Two of three slots taken: the last one is reserved for superusers.
        errors, err = failed_checkout(make_engine, registry, _url(port, ROLE))
        assert "remaining connection slots are reserved" in str(err)
        assert errors == {"too_many_connections": 1.0}
        with holding(_url(port), 1):
            errors, err = failed_checkout(make_engine, registry, _url(port))
            assert "too many clients already" in str(err)
            assert errors == {"too_many_connections": 1.0}


def test_a_role_over_its_connection_limit_is_too_many_connections(
    small_pg, registry, make_engine
) -> None:
    with holding(_url(small_pg.port, LIMITED), 1):
        errors, err = failed_checkout(make_engine, registry, _url(small_pg.port, LIMITED))
    assert "too many connections for role" in str(err)
    assert errors == {"too_many_connections": 1.0}


def test_a_wrong_password_is_authentication_failed(small_pg, registry, make_engine) -> None:
    url = f"postgresql+psycopg://pw_connerr_pw:wrong@127.0.0.1:{small_pg.port}/postgres"
    errors, err = failed_checkout(make_engine, registry, url)
    assert "password authentication failed" in str(err)
    assert errors == {"authentication_failed": 1.0}


def test_tls_required_by_the_client_and_not_offered_is_tls_error(
    small_pg, registry, make_engine
) -> None:
    errors, err = failed_checkout(make_engine, registry, _url(small_pg.port, sslmode="require"))
    assert "SSL" in str(err)
    assert errors == {"tls_error": 1.0}


def test_a_server_shutting_down_then_stopped(throwaway_pg, registry, make_engine) -> None:
    small_pg = throwaway_pg  # its own: this test stops it
    port = small_pg.port
    with holding(_url(port), 1):
        # A smart shutdown waits for the open session and turns new ones away meanwhile.
        small_pg._run(
            [str(PG_BIN / "pg_ctl"), "-D", str(small_pg.data), "-m", "smart", "-W", "stop"]
        )
        errors, err = failed_checkout(make_engine, registry, _url(port))
        assert "shutting down" in str(err)
        assert errors == {"server_shutdown": 1.0}
    _wait_until_closed(port)
    errors, err = failed_checkout(make_engine, registry, _url(port))
    assert errors == {"connection_refused": 1.0}


def _wait_until_closed(port: int) -> None:
    for _ in range(600):  # bounded: a smart shutdown ends once its last session has gone
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                pass
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError(f"PostgreSQL on port {port} did not stop")


# --------------------------------------------------------------------------------------
# The shared PostgreSQL, and no server at all.


def test_a_role_that_does_not_exist_is_authentication_failed(
    postgres_url, registry, make_engine
) -> None:
    url = sqlalchemy.engine.make_url(postgres_url).set(username="pw_no_such_role_4c1e")
    errors, err = failed_checkout(make_engine, registry, url.render_as_string(False))
    assert "does not exist" in str(err)
    assert errors == {"authentication_failed": 1.0}


def test_a_database_that_does_not_exist_is_database_not_found(
    postgres_url, registry, make_engine
) -> None:
    url = sqlalchemy.engine.make_url(postgres_url).set(database="pw_no_such_db_4c1e")
    errors, _ = failed_checkout(make_engine, registry, url.render_as_string(False))
    assert errors == {"database_not_found": 1.0}


def test_a_closed_port_is_connection_refused(registry, make_engine) -> None:
    errors, err = failed_checkout(make_engine, registry, _url(free_port()))
    assert "refused" in str(err)
    assert errors == {"connection_refused": 1.0}


def test_a_server_that_never_answers_is_timeout(registry, make_engine) -> None:
    with socket.socket() as silent:  # accepts TCP connections (the backlog) and says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = _url(silent.getsockname()[1], connect_timeout="1")
        errors, _ = failed_checkout(make_engine, registry, url)
    assert errors == {"timeout": 1.0}


def test_a_host_that_does_not_resolve_is_name_resolution(registry, make_engine) -> None:
    url = "postgresql+psycopg://postgres@pw-no-such-host.invalid:5432/postgres"
    errors, _ = failed_checkout(make_engine, registry, url)
    assert errors == {"name_resolution": 1.0}


# --------------------------------------------------------------------------------------
# MariaDB through PyMySQL: MySQL error numbers.

MARIADB = "mysql+pymysql://root@127.0.0.1:3306/test"


@pytest.fixture
def mariadb() -> Iterator[Engine]:
    pytest.importorskip("pymysql")
    admin = sqlalchemy.create_engine(MARIADB, poolclass=NullPool)
    try:
        with admin.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as e:
        admin.dispose()
        unavailable(f"MariaDB at 127.0.0.1:3306 ({type(e).__name__})")
    with admin.begin() as c:
        c.execute(text(f"DROP USER IF EXISTS '{ROLE}'@'%'"))
        c.execute(text(f"CREATE USER '{ROLE}'@'%' WITH MAX_USER_CONNECTIONS 1"))
        c.execute(text(f"GRANT USAGE ON *.* TO '{ROLE}'@'%'"))
    try:
        yield admin
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP USER IF EXISTS '{ROLE}'@'%'"))
        admin.dispose()


def test_mariadb_failures(mariadb, registry, make_engine) -> None:
    import pymysql

    limited = f"mysql+pymysql://{ROLE}@127.0.0.1:3306/"
    held = pymysql.connect(host="127.0.0.1", port=3306, user=ROLE)
    try:
        errors, err = failed_checkout(make_engine, registry, limited)
    finally:
        held.close()
    assert err.orig.args[0] in (1203, 1226)  # max_user_connections (MariaDB: 1226)
    assert errors == {"too_many_connections": 1.0}
    errors, err = failed_checkout(
        make_engine, registry, "mysql+pymysql://pw_nobody_4c1e@127.0.0.1:3306/test"
    )
    assert err.orig.args[0] == 1045
    assert errors == {"authentication_failed": 1.0}
    errors, err = failed_checkout(
        make_engine, registry, "mysql+pymysql://root@127.0.0.1:3306/pw_no_db_4c1e"
    )
    assert err.orig.args[0] == 1049
    assert errors == {"database_not_found": 1.0}
    errors, err = failed_checkout(
        make_engine, registry, f"mysql+pymysql://root@127.0.0.1:{free_port()}/test"
    )
    assert err.orig.args[0] == 2003
    assert errors == {"connection_refused": 1.0}


def test_mysql_too_many_connections_1040() -> None:
    # The server-wide limit is not lowered on the shared MariaDB; 1040 is what PyMySQL raises.
    import pymysql

    assert classify_connection_error(
        pymysql.err.OperationalError(1040, "Too many connections")
    ) == ("too_many_connections")


def test_the_vocabulary() -> None:
    assert CONNECTION_ERROR_TYPES == (
        "too_many_connections", "connection_refused", "authentication_failed",
        "database_not_found", "server_shutdown", "connection_lost", "timeout",
        "name_resolution", "tls_error",
    )  # fmt: skip
