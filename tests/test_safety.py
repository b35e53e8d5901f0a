"""poolwatch never leaks secrets, never breaks the exposition, never breaks the application."""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy
from prometheus_client import generate_latest
from sqlalchemy import text

import poolwatch
from poolwatch.backends.prometheus.metrics import PrometheusTracker
from poolwatch.core.tracker import immediate
from tests.support.pools import Reader
from tests.support.services import prometheus_binary

SECRET_USER = "pw_secret_user_7f3a"
SECRET_PASSWORD = "hunter2-Sup3rS3cret"
SECRET_LITERAL = "card-4111-1111-1111-1111"


@pytest.fixture
def secret_role(postgres_url: str) -> str:
    admin = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
    with admin.begin() as c:
        exists = c.execute(
            text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": SECRET_USER}
        ).first()
        if not exists:
            c.execute(text(f"CREATE ROLE {SECRET_USER} LOGIN PASSWORD '{SECRET_PASSWORD}'"))
    admin.dispose()
    url = sqlalchemy.engine.make_url(postgres_url)
    return url.set(username=SECRET_USER, password=SECRET_PASSWORD).render_as_string(
        hide_password=False
    )


def test_no_credentials_or_literals_in_the_exposition(secret_role, registry, make_engine) -> None:
    engine = make_engine(secret_role, pool_size=1, max_overflow=0, pool_timeout=0.1)
    handle = poolwatch.instrument(engine, registry=registry, slow_query_threshold=0.000001)
    with engine.connect() as c:
        c.execute(text(f"SELECT '{SECRET_LITERAL}' AS card, 42 AS answer"))
        c.execute(text("SELECT :p AS card"), {"p": SECRET_LITERAL})
        with pytest.raises(sqlalchemy.exc.DBAPIError):
            c.execute(text(f"SELECT CAST('{SECRET_LITERAL}' AS integer)"))
        c.rollback()
        with pytest.raises(sqlalchemy.exc.TimeoutError):
            engine.connect()
    text_format = generate_latest(registry).decode()
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

    open_metrics = openmetrics(registry).decode()
    exposition = text_format + open_metrics
    assert handle.name in exposition
    for secret in (SECRET_USER, SECRET_PASSWORD, SECRET_LITERAL):
        assert secret not in exposition
    # A fragment of the literal in any name, help text or label, but not in a sample's value: a
    # number may spell it (a create time's sum of 0.006031513214111328 once did).
    words = _words_of(text_format, open_metrics)
    assert handle.name in words
    assert [w for w in words if "4111" in w] == []


def _words_of(text_format: str, open_metrics: str) -> set[str]:
    """Every metric name, help text, label name and label value of both expositions."""
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as parse_open_metrics,
    )
    from prometheus_client.parser import text_string_to_metric_families as parse_text

    words: set[str] = set()
    for family in [*parse_text(text_format), *parse_open_metrics(open_metrics)]:
        words.update((family.name, family.documentation))
        for sample in family.samples:
            words.add(sample.name)
            words.update(sample.labels)
            words.update(sample.labels.values())
            if sample.exemplar is not None:
                words.update(sample.exemplar.labels)
                words.update(sample.exemplar.labels.values())
    return words


def test_slow_statement_log_redacts_literals_and_never_logs_parameters(
    postgres_url, registry, make_engine, caplog
) -> None:
    engine = make_engine(postgres_url)
    poolwatch.instrument(engine, registry=registry, slow_query_threshold=0.05)
    with caplog.at_level(logging.WARNING, logger="poolwatch"), engine.connect() as c:
        c.execute(
            text(f"SELECT pg_sleep(0.06), '{SECRET_LITERAL}' AS lit, :p AS param"),
            {"p": "param-value-xyz"},
        )
        c.execute(text("SELECT 1"))
    slow = [r for r in caplog.records if "slow statement" in r.getMessage()]
    assert len(slow) == 1
    message = slow[0].getMessage()
    assert "SELECT pg_sleep(?), ? AS lit, %(p)s AS param" in message
    assert SECRET_LITERAL not in message and "param-value-xyz" not in message


def test_promtool_reports_only_the_documented_finding(postgres_url, registry, make_engine) -> None:
    promtool = prometheus_binary("promtool")
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    poolwatch.instrument(engine, registry=registry, labels={"role": "primary"}, leak_threshold=60)
    with engine.connect() as c:
        c.execute(text("SELECT 1"))
        with pytest.raises(sqlalchemy.exc.TimeoutError):
            engine.connect()
        with pytest.raises(sqlalchemy.exc.DBAPIError):
            c.execute(text("SELECT 1/0"))
        c.invalidate()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=generate_latest(registry),
        capture_output=True, timeout=30,
    )  # fmt: skip
    findings = [
        line
        for line in result.stdout.decode().splitlines() + result.stderr.decode().splitlines()
        if line
    ]
    assert findings == [
        'db_client_connection_count non-histogram and non-summary metrics should not have "_count" suffix'
    ]


class Boom(RuntimeError):
    pass


def _boom(*_args: object) -> None:
    raise Boom("metrics backend is broken")


def test_a_raising_metrics_backend_does_not_affect_the_application(
    postgres_url, registry, make_engine, caplog, monkeypatch
) -> None:
    broken = threading.Event()
    tracker_init = PrometheusTracker.__init__

    def breakable(record: Callable[[float], None]) -> Callable[[float], None]:
        def maybe_record(seconds: float) -> None:
            if broken.is_set():
                _boom()
            record(seconds)

        return maybe_record

    def init(self: PrometheusTracker, *args: Any, **kwargs: Any) -> None:
        tracker_init(self, *args, **kwargs)
        # The pool listeners take the hot-path recorders once, when they are installed.
        self.wait = breakable(self.wait)
        self.use = breakable(self.use)

    monkeypatch.setattr(PrometheusTracker, "__init__", init)
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    handle = poolwatch.instrument(engine, registry=registry)
    with engine.connect():
        pass  # the dialect's first-connect queries run with a working backend
    broken.set()
    tracker = handle.tracker
    tracker.timed_out = _boom  # type: ignore[method-assign]
    tracker.statement_failed = _boom  # type: ignore[method-assign]
    tracker.statement = lambda *a: immediate(_boom)  # type: ignore[method-assign]

    with caplog.at_level(logging.ERROR, logger="poolwatch"):
        for _ in range(3):
            with engine.connect() as c:
                assert c.execute(text("SELECT count(*) > 0 FROM pg_database")).scalar_one()
        with engine.connect() as c:
            with pytest.raises(sqlalchemy.exc.DataError):
                c.execute(text("SELECT 1/0"))
            errors: list[BaseException] = []
            t = threading.Thread(target=lambda: _try_connect(engine, errors))
            t.start()
            t.join()
        assert [type(e) for e in errors] == [sqlalchemy.exc.TimeoutError]

    m = Reader(registry, handle.name)
    errors_by = {
        c: m("poolwatch_instrumentation_errors_total", component=c)
        for c in ("checkout", "checkin", "statement")
    }
    assert errors_by == {"checkout": 5.0, "checkin": 4.0, "statement": 4.0}
    logged = [r for r in caplog.records if r.name == "poolwatch"]
    # Logged once per component, not once per error.
    assert sorted(r.getMessage().split(" for pool")[0] for r in logged) == [
        "poolwatch: internal error in checkin",
        "poolwatch: internal error in checkout",
        "poolwatch: internal error in statement",
    ]
    assert (m.used, m.idle) == (0, 1)


def _try_connect(engine: sqlalchemy.Engine, errors: list[BaseException]) -> None:
    try:
        engine.connect()
    except BaseException as e:
        errors.append(e)


def test_an_internal_error_log_never_carries_the_database_message(
    postgres_url, registry, make_engine, caplog
) -> None:
    # poolwatch's code runs while the application's statement error is being handled: the log
    # record of an error inside poolwatch must not print that error's message.
    engine = make_engine(postgres_url)
    handle = poolwatch.instrument(engine, registry=registry)
    handle.tracker.statement_failed = _boom  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="poolwatch"), engine.connect() as c:
        with pytest.raises(sqlalchemy.exc.DataError) as raised:
            c.execute(text(f"SELECT CAST('{SECRET_LITERAL}' AS integer)"))
    assert SECRET_LITERAL in str(raised.value)  # the application still gets all of it
    (record,) = [r for r in caplog.records if "internal error in statement" in r.getMessage()]
    logged = caplog.text
    assert "Traceback (most recent call last)" in logged
    assert "psycopg.errors.InvalidTextRepresentation (message withheld)" in logged
    assert "tests.test_safety.Boom (message withheld)" in logged
    assert SECRET_LITERAL not in logged and "invalid input syntax" not in logged
    assert record.exc_info is None
