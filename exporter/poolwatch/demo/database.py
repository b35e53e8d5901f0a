"""The demo's database: an engine on whatever database ``--db`` names (SQLite, PostgreSQL,
MySQL/MariaDB), and the demo's own two tables there, named ``poolwatch_demo_<run id>_*`` so that
concurrent demos (the compose stack runs two) never share them."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    ForeignKey,
    Identity,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.schema import DropTable
from sqlalchemy.sql import Executable

__all__ = [
    "CUSTOMERS",
    "DIALECTS",
    "MAX_OVERFLOW",
    "POOL_SIZE",
    "POOL_TIMEOUT",
    "TABLE_PREFIX",
    "DemoError",
    "DemoTables",
    "make_engine",
    "sleep_statement",
]

TABLE_PREFIX = "poolwatch_demo_"
DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb")
POOL_SIZE, MAX_OVERFLOW, POOL_TIMEOUT = 5, 2, 1.0
CUSTOMERS = 50


class DemoError(Exception):
    """A reason the demo cannot run, said to the user in one line (exit status 2)."""


class DemoTables:
    """The demo's two tables, uniquely named for this run. SQLAlchemy writes each dialect's DDL
    (an identity column on PostgreSQL, AUTO_INCREMENT on MySQL, a rowid alias on SQLite)."""

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id or uuid.uuid4().hex[:8]
        prefix = f"{TABLE_PREFIX}{self.run_id}_"
        self.metadata = MetaData()
        self.customers = Table(
            f"{prefix}customers",
            self.metadata,
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column("name", String(100), nullable=False),
        )
        self.orders = Table(
            f"{prefix}orders",
            self.metadata,
            Column("id", Integer, Identity(), primary_key=True),
            Column("customer_id", Integer, ForeignKey(self.customers.c.id), nullable=False),
            Column("total", Numeric(10, 2), nullable=False),
        )
        self.created: list[Table] = []

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.metadata.sorted_tables]

    def create(self, engine: Engine) -> None:
        # One table at a time, never checkfirst: a table of that name that is not ours is an
        # error, and only what this run created is dropped (MySQL's DDL is not transactional).
        for table in self.metadata.sorted_tables:
            with engine.begin() as c:
                table.create(c, checkfirst=False)
            self.created.append(table)
        with engine.begin() as c:
            c.execute(
                insert(self.customers),
                [{"id": i, "name": f"customer {i}"} for i in range(1, CUSTOMERS + 1)],
            )

    def drop(self, engine: Engine) -> None:
        while self.created:
            table = self.created[-1]
            with engine.begin() as c:
                # IF EXISTS in the statement, not a has_table() query first: the server decides.
                c.execute(DropTable(table, if_exists=True))
            self.created.pop()


def sleep_statement(engine: Engine, seconds: float) -> Executable:
    if engine.dialect.name == "postgresql":
        return select(func.pg_sleep(seconds))
    if engine.dialect.name in ("mysql", "mariadb"):
        return select(func.sleep(seconds))
    return select(func.demo_sleep(seconds))


def _sqlite_sleep(seconds: float) -> int:
    time.sleep(seconds)
    return 0


def make_engine(url: str) -> Engine:
    accepts = "--db accepts a SQLite, PostgreSQL or MySQL/MariaDB URL"
    try:
        dialect = make_url(url).get_backend_name()
    except ArgumentError:
        raise DemoError(f"{accepts}, e.g. postgresql+psycopg://user@host/db") from None
    if dialect not in DIALECTS:
        raise DemoError(f"{accepts}, not {dialect!r}")
    try:
        engine = create_engine(
            url, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, pool_timeout=POOL_TIMEOUT,
            pool_pre_ping=True,
        )  # fmt: skip
    except ImportError as e:
        raise DemoError(f"the driver for {dialect} is not installed ({e})") from None
    except ArgumentError as e:
        raise DemoError(f"{accepts}: {e}") from None
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _functions(dbapi_connection: Any, record: Any) -> None:
            # SQLite has no sleep(); the demo's "slow query" needs one. WAL lets readers and
            # the writer proceed together, as they would on a server database.
            dbapi_connection.create_function("demo_sleep", 1, _sqlite_sleep)
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA busy_timeout=5000")

    return engine
