"""poolwatch_query_summaries_folded_total is exact past any number of folded statements."""

from __future__ import annotations

import pytest
import sqlalchemy
from sqlalchemy import text

import poolwatch
from tests.support.pools import Reader

CAP = 5
DISTINCT = 10_200  # distinct summaries past the cap: more than the old 10,000 limit


def test_every_folded_execution_is_counted(registry, make_engine) -> None:
    engine = make_engine("sqlite://")
    handle = poolwatch.instrument(engine, registry=registry, max_query_summaries=CAP)
    m = Reader(registry, handle.name)
    with engine.connect() as c:
        for i in range(CAP):  # the cap's own summaries
            c.exec_driver_sql(f"WITH kept{i} AS (SELECT 1 AS a) SELECT a FROM kept{i}")
        for i in range(DISTINCT):
            c.exec_driver_sql(f"WITH t{i} AS (SELECT 1 AS a) SELECT a FROM t{i}")
        for i in range(100):  # the same statements again: cached, still counted
            c.exec_driver_sql(f"WITH t{i} AS (SELECT 1 AS a) SELECT a FROM t{i}")
        for i in range(CAP):  # under the cap: not folded
            c.exec_driver_sql(f"WITH kept{i} AS (SELECT 1 AS a) SELECT a FROM kept{i}")
        for i in range(3):  # folded and failing: counted too
            with pytest.raises(sqlalchemy.exc.OperationalError):
                c.execute(text(f"SELECT a FROM no_such_table_{i}"))
    folded = DISTINCT + 100 + 3
    assert m("poolwatch_query_summaries_folded_total") == folded
    other = {
        "db_client_connection_pool_name": handle.name,
        "db_system_name": "sqlite",
        "db_operation_name": "",
        "db_query_summary": "other",
    }
    ok = registry.get_sample_value(
        "db_client_operation_duration_seconds_count", {**other, "error_type": ""}
    )
    assert ok == DISTINCT + 100
