"""Statement metrics: operation, summary, error type, the summary cap, odd statements."""

from __future__ import annotations

import pytest
import sqlalchemy
from prometheus_client import generate_latest
from sqlalchemy import text

import poolwatch
from tests.support.pools import Reader

DURATION = "db_client_operation_duration_seconds_count"


@pytest.fixture
def pg_table(postgres_url):  # type: ignore[no-untyped-def]
    admin = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
    with admin.begin() as c:
        c.execute(text("DROP TABLE IF EXISTS pw_orders"))
        c.execute(text("CREATE TABLE pw_orders (id int PRIMARY KEY, total numeric)"))
    yield "pw_orders"
    with admin.begin() as c:
        c.execute(text("DROP TABLE IF EXISTS pw_orders"))
    admin.dispose()


def _series(registry, pool: str) -> dict[tuple[str, str, str], float]:  # type: ignore[no-untyped-def]
    out = {}
    for metric in registry.collect():
        if metric.name != "db_client_operation_duration_seconds":
            continue
        for s in metric.samples:
            if s.name.endswith("_count") and s.labels["db_client_connection_pool_name"] == pool:
                key = (
                    s.labels["db_operation_name"],
                    s.labels["db_query_summary"],
                    s.labels["error_type"],
                )
                out[key] = s.value
    return out


def test_statements_by_summary_and_error_type(
    postgres_url, pg_table, registry, make_engine
) -> None:
    engine = make_engine(postgres_url)
    with engine.connect():
        pass  # the dialect's own first-connect queries happen before instrumenting
    handle = poolwatch.instrument(engine, registry=registry)
    with engine.begin() as c:
        c.execute(text("INSERT INTO pw_orders (id, total) VALUES (:i, :t)"), {"i": 1, "t": 10})
        c.execute(
            text("INSERT INTO pw_orders (id, total) VALUES (:i, :t)"),
            [{"i": i, "t": i} for i in range(2, 3002)],  # executemany with thousands of rows
        )
        c.execute(text("SELECT total FROM pw_orders WHERE id = :i"), {"i": 1})
    with engine.connect() as c, pytest.raises(sqlalchemy.exc.IntegrityError):
        c.execute(text("INSERT INTO pw_orders (id, total) VALUES (1, 1)"))
    series = _series(registry, handle.name)
    assert series[("INSERT", "INSERT pw_orders", "")] == 2  # one row, then one executemany
    assert series[("SELECT", "SELECT pw_orders", "")] == 1
    assert series[("INSERT", "INSERT pw_orders", "integrity_constraint_violation")] == 1
    assert registry.get_sample_value(
        DURATION,
        {"db_client_connection_pool_name": handle.name, "db_system_name": "postgresql",
         "db_operation_name": "SELECT", "db_query_summary": "SELECT pw_orders", "error_type": ""},
    ) == 1  # fmt: skip


def test_summaries_are_capped_and_the_rest_is_other(registry, make_engine) -> None:
    engine = make_engine("sqlite://")
    handle = poolwatch.instrument(engine, registry=registry, max_query_summaries=20)
    with engine.connect() as c:
        for i in range(200):
            c.exec_driver_sql(f"CREATE TABLE t_{i} (x int)")
        for i in range(10_000):  # 10,000 distinct statements, 400 distinct summaries
            c.exec_driver_sql(f"SELECT x FROM t_{i % 200} WHERE x = {i}")
    series = _series(registry, handle.name)
    summaries = {summary for _, summary, _ in series}
    assert len(summaries) == 21  # the cap plus "other"
    assert "other" in summaries
    total = sum(series.values())
    assert total == 10_200
    m = Reader(registry, handle.name)
    # Every execution past the cap: 180 CREATE TABLE, then all 10,000 SELECTs.
    assert m("poolwatch_query_summaries_folded_total") == 180 + 10_000
    exposition = generate_latest(registry).decode()
    assert "WHERE" not in exposition and "x = 1" not in exposition


def test_statement_metrics_can_be_turned_off(registry, make_engine) -> None:
    engine = make_engine("sqlite://")
    handle = poolwatch.instrument(engine, registry=registry, statement_metrics=False)
    with engine.connect() as c:
        c.execute(text("SELECT 1"))
    assert _series(registry, handle.name) == {}
    assert "do_execute" not in engine.dialect.__dict__
