"""instrument() with no engine sees every engine created afterwards, however create_engine was
imported, adds nothing to a statement's path, and logs no user name."""

from __future__ import annotations

import gc
import logging
import uuid

import pytest
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.engine.interfaces import Dialect

# Imported before instrument() runs, as an application module would be.
from sqlalchemy import create_engine as early_create_engine  # isort: skip
from sqlalchemy.engine import create_engine as early_engine_create_engine  # isort: skip
from sqlalchemy.engine.create import create_engine as early_inner_create_engine  # isort: skip
from sqlalchemy.engine import engine_from_config as early_engine_from_config  # isort: skip

import poolwatch


@pytest.fixture
def automatic(registry):
    handle = poolwatch.instrument(registry=registry)
    try:
        yield handle
    finally:
        handle.uninstrument()


def test_engines_from_create_engine_imported_before_instrument_are_seen(
    automatic, postgres_url
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engines = [
        early_create_engine("sqlite://"),
        early_engine_create_engine("sqlite://"),
        early_inner_create_engine(postgres_url),
        early_engine_from_config({"sqlalchemy.url": "sqlite://"}),
    ]
    async_engine = create_async_engine("sqlite+aiosqlite://")
    try:
        for engine in engines:
            assert poolwatch.instrumented(engine) is not None, engine
            assert poolwatch.instrumented(engine).automatic
        assert poolwatch.instrumented(async_engine) is not None
        with engines[2].connect() as c:
            assert c.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        for engine in engines:
            engine.dispose()
    automatic.uninstrument()
    assert poolwatch.instrumented(async_engine) is None
    later = early_create_engine("sqlite://")
    assert poolwatch.instrumented(later) is None  # the hook is restored
    assert "_poolwatch_all" not in vars(Dialect.__dict__["engine_created"].__func__)


def test_the_automatic_mode_adds_nothing_to_the_statement_path(registry) -> None:
    explicit = sqlalchemy.create_engine("sqlite://")
    handle = poolwatch.instrument(
        explicit, name="pw-auto-" + uuid.uuid4().hex[:6], registry=registry
    )
    automatic = poolwatch.instrument(registry=registry)
    auto = early_create_engine("sqlite://")
    try:
        # No Engine listener (which sends every statement down SQLAlchemy's event path) and the
        # same statement seam as an explicitly instrumented engine.
        assert auto._has_events is False and explicit._has_events is False
        assert getattr(auto.dialect.__dict__["do_execute"], "_poolwatch", None) is not None
        for name in ("checkout", "checkin", "connect", "first_connect", "close"):
            assert len(getattr(auto.pool.dispatch, name)) == len(
                getattr(explicit.pool.dispatch, name)
            )
        # A class-level Engine listener would set this on the class, for every engine.
        assert sqlalchemy.Engine._has_events is False
    finally:
        automatic.uninstrument()
        handle.uninstrument()
        auto.dispose()
        explicit.dispose()


def test_a_dialect_that_overrides_the_hook_is_named_loudly(registry, caplog) -> None:
    class OwnHookDialect(sqlalchemy.engine.default.DefaultDialect):
        @classmethod
        def engine_created(cls, engine):  # no super(): poolwatch never hears of its engines
            pass

    try:
        with caplog.at_level(logging.WARNING, logger="poolwatch"):
            handle = poolwatch.instrument(registry=registry)
        handle.uninstrument()
        (warning,) = [r.getMessage() for r in caplog.records if "OwnHookDialect" in r.getMessage()]
        assert "pass those engines to instrument(engine)" in warning
    finally:
        del OwnHookDialect
        gc.collect()


def test_a_failure_to_instrument_logs_the_url_without_user_or_password(registry, caplog) -> None:
    name = "pw-auto-taken-" + uuid.uuid4().hex[:6]
    holder = sqlalchemy.create_engine("sqlite://")
    poolwatch.instrument(holder, name=name, registry=registry)
    handle = poolwatch.instrument(name=name, registry=registry)
    try:
        with caplog.at_level(logging.ERROR, logger="poolwatch"):
            engine = early_create_engine(
                "postgresql+psycopg://alice_pw_user:s3cr3t-pw@127.0.0.1:5/orders?password=s3cr3t-pw"
            )
        (line,) = [
            r.getMessage() for r in caplog.records if "could not instrument" in r.getMessage()
        ]
        assert "'postgresql+psycopg://127.0.0.1:5/orders'" in line
        assert f"name={name!r} is already used" in line
        for secret in ("alice_pw_user", "s3cr3t-pw", "***"):
            assert secret not in line
        engine.dispose()
    finally:
        handle.uninstrument()
        poolwatch.uninstrument(holder)
        holder.dispose()


def test_describe_engine() -> None:
    from poolwatch.sources.sqlalchemy.auto import describe_engine

    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://bob:pw@db.example:6543/app?sslmode=require"
    )
    assert describe_engine(engine) == "'postgresql+psycopg://db.example:6543/app'"
    assert describe_engine(object()) == "object"
