"""error_type: SQLSTATE classes from the real PostgreSQL, wrapped and not; class names otherwise."""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
import sqlalchemy.exc

from poolwatch.sql.error_types import OTHER_ERROR, SQLSTATE_CLASSES, classify_error

_LABEL = re.compile(r"[A-Za-z0-9_.]{1,64}")


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def pg(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(_dsn(postgres_url), autocommit=True) as conn:
        yield conn


@pytest.fixture
def table(pg: psycopg.Connection[Any]) -> Iterator[str]:
    """A table of our own in the shared database (tests may run side by side)."""
    name = f"pw_err_{uuid.uuid4().hex[:12]}"
    pg.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v int NOT NULL DEFAULT 0)")
    pg.execute(f"INSERT INTO {name} (id) VALUES (1)")
    try:
        yield name
    finally:
        pg.execute(f"DROP TABLE IF EXISTS {name}")


def _raised(fn: Callable[[], object]) -> BaseException:
    try:
        fn()
    except BaseException as e:  # whatever it was is what the test looks at
        return e
    raise AssertionError("no exception")


# --------------------------------------------------------------------------------------
# Real psycopg errors.

_CASES: dict[str, tuple[str, str, str]] = {
    # name: (SQL, expected SQLSTATE prefix, expected label)
    "unique violation": (
        "INSERT INTO {t} (id) VALUES (1)",
        "23505",
        "integrity_constraint_violation",
    ),
    "not null": (
        "INSERT INTO {t} (id, v) VALUES (2, NULL)",
        "23502",
        "integrity_constraint_violation",
    ),
    "syntax error": ("SELEC * FROM {t}", "42601", "syntax_error_or_access_rule_violation"),
    "undefined table": (
        "SELECT * FROM {t}_missing",
        "42P01",
        "syntax_error_or_access_rule_violation",
    ),
    "division by zero": ("SELECT 1 / (v - v) FROM {t}", "22012", "data_exception"),
    "bad input": ("SELECT 'not a number'::int FROM {t}", "22P02", "data_exception"),
    "feature not supported": (
        "SELECT count(*) FROM {t} FOR UPDATE",
        "0A000",
        "feature_not_supported",
    ),
    "raise exception": (
        "DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = 'XX000'; END $$",
        "XX000",
        "internal_error",
    ),
    "custom sqlstate": (
        "DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = 'ZQ123'; END $$",
        "ZQ123",
        "sqlstate_ZQ",
    ),
}


@pytest.mark.parametrize("name", list(_CASES))
def test_real_psycopg_errors(name: str, pg: psycopg.Connection[Any], table: str) -> None:
    sql, state, label = _CASES[name]
    err = _raised(lambda: pg.execute(sql.format(t=table)))  # type: ignore[arg-type]
    assert isinstance(err, psycopg.Error)
    assert err.sqlstate == state
    assert classify_error(err) == label


@pytest.mark.parametrize("name", list(_CASES))
def test_real_errors_wrapped_by_sqlalchemy(name: str, postgres_url: str, table: str) -> None:
    sql, state, label = _CASES[name]
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            err = _raised(lambda: conn.exec_driver_sql(sql.format(t=table)))
    finally:
        engine.dispose()
    assert isinstance(err, sqlalchemy.exc.DBAPIError)
    assert getattr(err.orig, "sqlstate", None) == state
    assert classify_error(err) == label


def test_statement_timeout_is_operator_intervention(pg: psycopg.Connection[Any]) -> None:
    pg.execute("SET statement_timeout = 50")
    err = _raised(lambda: pg.execute("SELECT pg_sleep(2)"))
    assert isinstance(err, psycopg.errors.QueryCanceled)
    assert classify_error(err) == "operator_intervention"


def test_statement_timeout_through_sqlalchemy(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET statement_timeout = 50")
            err = _raised(lambda: conn.execute(sa.text("SELECT pg_sleep(2)")))
    finally:
        engine.dispose()
    assert isinstance(err, sqlalchemy.exc.OperationalError)
    assert classify_error(err) == "operator_intervention"


def test_in_failed_transaction_is_invalid_transaction_state(postgres_url: str, table: str) -> None:
    with psycopg.connect(_dsn(postgres_url)) as conn:
        _raised(lambda: conn.execute("SELECT 1/0"))
        err = _raised(lambda: conn.execute(f"SELECT * FROM {table}"))
    assert isinstance(err, psycopg.errors.InFailedSqlTransaction)
    assert classify_error(err) == "invalid_transaction_state"


def test_serialization_failure_is_transaction_rollback(postgres_url: str, table: str) -> None:
    dsn = _dsn(postgres_url)
    with psycopg.connect(dsn) as first, psycopg.connect(dsn, autocommit=True) as second:
        first.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        first.execute(f"SELECT v FROM {table} WHERE id = 1").fetchall()
        second.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1")
        err = _raised(lambda: first.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1"))
    assert isinstance(err, psycopg.errors.SerializationFailure)
    assert classify_error(err) == "transaction_rollback"


def test_deadlock_is_transaction_rollback(postgres_url: str, table: str) -> None:
    dsn = _dsn(postgres_url)
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute(f"INSERT INTO {table} (id) VALUES (2)")
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker(first: int, second: int) -> None:
        with psycopg.connect(dsn) as conn:
            conn.execute("SET deadlock_timeout = '50ms'")
            conn.execute(f"UPDATE {table} SET v = 1 WHERE id = %s", (first,))
            barrier.wait(timeout=10)
            try:
                conn.execute(f"UPDATE {table} SET v = 1 WHERE id = %s", (second,))
            except psycopg.Error as e:
                errors.append(e)

    threads = [threading.Thread(target=worker, args=a) for a in ((1, 2), (2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(errors) == 1
    assert isinstance(errors[0], psycopg.errors.DeadlockDetected)
    assert classify_error(errors[0]) == "transaction_rollback"


def test_connection_refused_has_no_sqlstate() -> None:
    err = _raised(lambda: psycopg.connect("postgresql://postgres@127.0.0.1:1/x", connect_timeout=2))
    assert isinstance(err, psycopg.OperationalError)
    assert classify_error(err) == "OperationalError"
    engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/x")
    try:
        wrapped = _raised(engine.connect)
    finally:
        engine.dispose()
    assert isinstance(wrapped, sqlalchemy.exc.OperationalError)
    assert classify_error(wrapped) == "OperationalError"


# --------------------------------------------------------------------------------------
# Other drivers and plain Python.


def test_sqlite_errors_use_the_class_name() -> None:
    engine = sa.create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            err = _raised(lambda: conn.exec_driver_sql("INSERT INTO t VALUES (1)"))
            bad = _raised(lambda: conn.exec_driver_sql("SELEC 1"))
    finally:
        engine.dispose()
    assert isinstance(err, sqlalchemy.exc.IntegrityError)
    assert isinstance(err.orig, sqlite3.IntegrityError)
    assert classify_error(err) == "IntegrityError"
    assert classify_error(bad) == "OperationalError"


class _Psycopg2Like(Exception):
    pgcode = "40P01"


class _AsyncpgLike(Exception):
    sqlstate = "53300"


def test_other_postgresql_drivers() -> None:
    assert classify_error(_Psycopg2Like("deadlock")) == "transaction_rollback"
    assert classify_error(_AsyncpgLike("too many connections")) == "insufficient_resources"
    pg8000_like = Exception({"S": "ERROR", "C": "08006", "M": "terminated"})
    assert classify_error(pg8000_like) == "connection_exception"
    wrapped = sqlalchemy.exc.DBAPIError("SELECT 1", {}, _AsyncpgLike("x"))
    assert classify_error(wrapped) == "insufficient_resources"


def test_sqlstate_found_through_cause() -> None:
    try:
        try:
            raise _Psycopg2Like("inner")
        except _Psycopg2Like as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as e:
        assert classify_error(e) == "transaction_rollback"


class Outer:
    class Inner(Exception):
        pass


@pytest.mark.parametrize(
    ("exc", "label"),
    [
        (TimeoutError("took 30s for user alice"), "TimeoutError"),
        (ValueError("password=hunter2"), "ValueError"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (Outer.Inner("x"), "Outer.Inner"),
        (
            sqlalchemy.exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached"),
            "TimeoutError",
        ),
        (sqlalchemy.exc.StatementError("bind failed", "SELECT 1", {}, TypeError("x")), "TypeError"),
        (sqlalchemy.exc.ResourceClosedError("closed"), "ResourceClosedError"),
    ],
)
def test_plain_exceptions(exc: BaseException, label: str) -> None:
    assert classify_error(exc) == label


def test_never_the_message_and_always_a_safe_label() -> None:
    class Weird(Exception):
        sqlstate = "not a sqlstate 'secret'"
        pgcode = 23505  # wrong type

    err = Weird("secret value 42")
    assert (
        classify_error(err) == "test_never_the_message_and_always_a_safe_label._locals_.Weird"[:64]
    )
    for state in ("2350", "235050", "23 05", "ab123", "\n23505"):
        assert classify_error(type("E", (Exception,), {"sqlstate": state})()) == "E"


def test_long_and_odd_class_names_are_cut() -> None:
    name = "E" * 200
    label = classify_error(type(name, (Exception,), {})())
    assert label == "E" * 64
    odd = type("Ünïcode-Error!", (Exception,), {})
    assert _LABEL.fullmatch(classify_error(odd()))


def test_never_raises() -> None:
    class Hostile(Exception):
        def __getattribute__(self, name: str) -> Any:
            raise RuntimeError("no")

    assert classify_error(Hostile()) in (OTHER_ERROR, "Hostile")

    a, b = (
        sqlalchemy.exc.DBAPIError("x", {}, Exception()),
        sqlalchemy.exc.DBAPIError("y", {}, Exception()),
    )
    a.orig, b.orig = b, a  # a cycle
    assert _LABEL.fullmatch(classify_error(a))


def test_every_class_label_is_safe() -> None:
    assert len(SQLSTATE_CLASSES) >= 40
    for code, label in SQLSTATE_CLASSES.items():
        assert re.fullmatch(r"[0-9A-Z]{2}", code)
        assert re.fullmatch(r"[a-z_]{1,64}", label)
