"""End to end: a real Prometheus, running the shipped rules (windows and `for` shortened, logic
unchanged), scrapes a real instrumented app on the real PostgreSQL. The exhausted pool `busy`
raises the exhaustion alerts, the healthy pool `quiet` raises none, and every dashboard query
runs against the collected data. (A third pool, `broken`, only feeds the connection-errors
panel; no assertion is made about its alerts.) Dashboard panels that need series this scenario
lacks (the server's limit, not exported yet; postgres_exporter's) are listed by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml

from tests.support.dashboards import (
    load_dashboards,
    parse_label_values,
    queries,
    substitute,
    variable_query,
    variables,
)
from tests.support.rules import REPO, RULES_FILE, alerts, scale_durations
from tests.support.services import PrometheusServer, free_port, prometheus, wait_for_port

pytestmark = pytest.mark.slow

APP = REPO / "tests" / "e2e" / "app.py"
APP_SECONDS = 80  # the app stops by itself after this; the test needs about 45 s of it
JOB = "poolwatch-e2e"
# 5m windows become 10s, `for: 2m` becomes 4s, ... (never below 3 s: 3 scrapes at 1 s).
TIME_FACTOR = 1 / 30
# The exhaustion alerts, and the warnings an exhausted pool also deserves. (DBConnectionLeak
# is not required: holds of 1.5 s against a 1 s threshold make the leaked gauge flicker.)
BUSY_FIRING = {"DBPoolExhausted", "DBPoolCheckoutTimeouts", "DBPoolSaturationHigh",
               "DBPoolWaitTimeHigh"}
# Longest scaled `for` (DBConnectionChurnHigh: 15m -> 30s) plus margin: by then any alert that
# would misfire for `quiet` has had the time to fire.
QUIET_OBSERVATION = 35
# The one metric the scenario cannot produce (it would take a bug in poolwatch): queries that
# read it may return no data.
NOT_EXERCISED = {"poolwatch_instrumentation_errors_total"}
# The fleet panels read the server's limit and poolwatch_pool_info's server labels, which the
# scenario's pools on the real PostgreSQL export: every one of them must return data.
_PG = sqlalchemy.engine.make_url(
    os.environ.get("POOLWATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
)
FLEET_SERIES: set[str] = set()
FLEET_DEPENDENT_PANELS: set[tuple[str, str]] = set()
FLEET_DEPENDENT_LABELS: set[str] = set()
# No postgres_exporter scrapes this scenario's server: its row may show no data.
POSTGRES_EXPORTER_SERIES = {"pg_stat_activity_count"}
POSTGRES_EXPORTER_PANELS = {
    ("poolwatch / Fleet", "Server's connections vs pools', by pool"),  # its server target, A
    ("poolwatch / Fleet", "Server's connections by database and state"),
    ("poolwatch / Fleet", "Pools against pg_stat_activity"),  # its server targets, B and C
}


@pytest.fixture(params=["sqlalchemy", pytest.param("psycopg_pool", marks=pytest.mark.scenario)])
def kind(request: pytest.FixtureRequest) -> str:
    """Which pools the app runs: SQLAlchemy engines, or the same pools as psycopg_pool pools."""
    return str(request.param)


@pytest.fixture
def app(postgres_url: str, tmp_path: Path, kind: str) -> Iterator[str]:
    """The instrumented app; yields its scrape address (host:port)."""
    port = free_port()
    with (tmp_path / "app.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(APP), "--db", postgres_url, "--port", str(port),
             "--duration", str(APP_SECONDS), "--kind", kind],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            wait_for_port(port, timeout=30)
            yield f"127.0.0.1:{port}"
            assert proc.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
        finally:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def prom(app: str) -> Iterator[PrometheusServer]:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules/poolwatch.rules.yml"],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [app]}]}],
    }
    rules = scale_durations(RULES_FILE.read_text(), TIME_FACTOR)
    with prometheus(yaml.safe_dump(config), {"rules/poolwatch.rules.yml": rules}) as server:
        yield server


def api(server: PrometheusServer, path: str, **params: str) -> Any:
    url = f"{server.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as e:  # 400/422 carry the PromQL error
        body = json.load(e)
    assert body["status"] == "success", f"{params}: {body}"
    return body["data"]


def query(server: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    return list(api(server, "query", query=expr)["result"])


def scalar(server: PrometheusServer, expr: str) -> float:
    (sample,) = query(server, expr)
    return float(sample["value"][1])


def observe_alerts(server: PrometheusServer) -> tuple[dict[str, Any], set, list]:
    """Poll /api/v1/alerts until every alert expected for `busy` fires and the longest `for`
    (plus its window) has had time to elapse for `quiet` too; bounded. Returns the alerts of
    `busy` by name at the end, every (alertname, state) seen for `quiet`, and the final alerts."""
    started = time.monotonic()
    quiet_seen: set[tuple[str, str]] = set()
    while True:
        current = api(server, "alerts")["alerts"]
        by_pool: dict[str, dict[str, Any]] = {}
        for a in current:
            pool = by_pool.setdefault(a["labels"]["db_client_connection_pool_name"], {})
            pool[a["labels"]["alertname"]] = a
        quiet_seen |= {(n, a["state"]) for n, a in by_pool.get("quiet", {}).items()}
        busy = by_pool.get("busy", {})
        firing = {n for n, a in busy.items() if a["state"] == "firing"}
        elapsed = time.monotonic() - started
        if (BUSY_FIRING <= firing and elapsed >= QUIET_OBSERVATION) or elapsed > 60:
            return busy, quiet_seen, current
        time.sleep(0.5)


def test_alerts_and_dashboards_against_real_prometheus(
    prom: PrometheusServer, app: str, kind: str
) -> None:
    # The fast rules are the shipped rules with shorter durations, nothing else.
    fast = alerts(scale_durations(RULES_FILE.read_text(), TIME_FACTOR))
    assert {n: r["expr"].replace("[4s]", "[2m]").replace("[10s]", "[5m]")
            for n, r in fast.items()} == {n: r["expr"] for n, r in alerts().items()}

    busy, quiet_seen, current = observe_alerts(prom)
    assert {n: busy[n]["state"] for n in BUSY_FIRING if n in busy} == dict.fromkeys(
        BUSY_FIRING, "firing"), current
    exhausted = busy["DBPoolExhausted"]
    # Alerts keep job, instance and the user's role label; the description names pool and host.
    assert {k: exhausted["labels"][k] for k in ("job", "instance", "role", "severity")} == {
        "job": JOB, "instance": app, "role": "writer", "severity": "critical"}
    assert f"pool busy on instance {app}" in " ".join(exhausted["annotations"]["description"]
                                                      .split())
    # `quiet` never fired anything, and nothing is even pending for it by now.
    assert not {(n, s) for n, s in quiet_seen if s == "firing"}, quiet_seen
    assert not [a for a in current if a["labels"]["db_client_connection_pool_name"] == "quiet"]

    check_exact_values(prom, kind)
    check_dashboard_variables(prom, app)
    check_dashboard_queries(prom, app)


# The busy pool's configuration, as Prometheus stores it (labels with empty values are absent).
BUSY_INFO = {
    "sqlalchemy": {"pool_class": "QueuePool", "pool_size": "2", "max_overflow": "0",
                   "timeout": "0.5", "recycle": "", "pre_ping": "false"},
    "psycopg_pool": {"pool_class": "ConnectionPool", "min_size": "2", "max_size": "2",
                     "timeout": "0.5", "max_waiting": "0", "max_lifetime": "3600",
                     "max_idle": "600"},
}


def check_exact_values(server: PrometheusServer, kind: str) -> None:
    """What the scenario fixes: pool sizes, configuration, and the busy pool's saturation."""
    assert scalar(server, 'db_client_connection_max{db_client_connection_pool_name="busy"}') == 2
    assert scalar(server, 'db_client_connection_max{db_client_connection_pool_name="quiet"}') == 15
    (info,) = query(server, 'poolwatch_pool_info{db_client_connection_pool_name="busy"}')
    settings = {k: v for k, v in info["metric"].items()
                if k not in ("__name__", "job", "instance", "role", "db_client_connection_pool_name",
                             "server_address", "server_port", "db_namespace")}
    assert settings == {k: v for k, v in BUSY_INFO[kind].items() if v}
    assert scalar(server, 'max_over_time(pool:db_client_connection_saturation:ratio'
                          '{db_client_connection_pool_name="busy"}[10s])') == 1
    assert scalar(server, 'max_over_time(pool:db_client_connection_saturation:ratio'
                          '{db_client_connection_pool_name="quiet"}[10s])') < 0.5
    assert scalar(server, 'increase(db_client_connection_timeouts_total'
                          '{db_client_connection_pool_name="quiet"}[1m])') == 0
    assert scalar(server, 'increase(db_client_connection_timeouts_total'
                          '{db_client_connection_pool_name="busy"}[1m])') > 3


def check_dashboard_variables(server: PrometheusServer, app: str) -> None:
    expected = {"job": {JOB}, "instance": {app}, "role": {"writer", "reader"},
                "db_client_connection_pool_name": {"busy", "quiet", "broken"},
                "server_address": {_PG.host}, "server_port": {str(_PG.port or 5432)}}
    values = {"job": JOB, "instance": app, "role": "writer|reader", "pool": "busy|quiet|broken",
              "server": ".*"}
    for board in load_dashboards().values():
        for var in variables(board).values():
            if var["type"] != "query":
                continue
            selector, label = parse_label_values(variable_query(var))
            params = {"match[]": substitute(selector, values)} if selector else {}
            found = set(api(server, f"label/{label}/values", **params))
            assert expected[label] <= found, (var["name"], found)
            if label not in FLEET_DEPENDENT_LABELS:
                assert found, var["name"]


def check_dashboard_queries(server: PrometheusServer, app: str) -> None:
    """Every panel and annotation query, variables filled in as Grafana would: valid with `.*`
    for every variable, and returning data for the real job, instance, roles and pools, except
    where it reads series this scenario lacks (listed above)."""
    end = time.time()
    real = {"job": JOB, "instance": app, "role": "writer|reader", "pool": "busy|quiet|broken",
            "server": ".*", "port": ".*", "topk": "10"}
    everything = {"job": ".*", "instance": ".*", "role": ".*", "pool": ".*", "server": ".*",
                  "port": ".*", "topk": "10"}
    empty = []
    may_be_empty: set[tuple[str, str]] = set()
    checked = 0
    for board in load_dashboards().values():
        for q in queries(board):
            api(server, "query", query=substitute(q.expr, everything))  # valid PromQL
            result = api(server, "query_range", query=substitute(q.expr, real),
                         start=str(end - 20), end=str(end), step="1s")["result"]
            checked += 1
            lacking = {m for m in FLEET_SERIES | POSTGRES_EXPORTER_SERIES if m in q.expr}
            if lacking:
                may_be_empty.add((q.dashboard, q.where))
            if not result and not lacking and not any(m in q.expr for m in NOT_EXERCISED):
                empty.append(f"{q.dashboard} / {q.where} [{q.ref}]: {q.expr}")
    assert checked >= 60
    assert not empty, "queries without data:\n" + "\n".join(empty)
    # The lists name exactly the panels that read the missing series, so none hides in them.
    assert may_be_empty == FLEET_DEPENDENT_PANELS | POSTGRES_EXPORTER_PANELS
    check_fleet_totals(server, real)


# Fleet panels the scenario fixes exactly: one instance, pools of 2 (busy, role writer) and
# 15 + 1 (quiet and broken, role reader) connections; "Fleet demand" sums the same maxima
# through the pools' server (poolwatch_pool_info), whatever server labels the pools carry.
FLEET_EXPECTED = {"Instances": {"": 1}, "Pools": {"": 3},
                  "Sum of pools' maxima": {"writer": 2, "reader": 16},
                  "Fleet demand": {"writer": 2, "reader": 16}}


def check_fleet_totals(server: PrometheusServer, values: dict[str, str]) -> None:
    board = load_dashboards()["poolwatch-fleet.json"]
    found: dict[str, dict[str, float]] = {}
    for q in queries(board):
        if q.where not in FLEET_EXPECTED:
            continue
        by_role = found.setdefault(q.where, {})
        for sample in query(server, substitute(q.expr, values)):
            role = sample["metric"].get("role", "")
            by_role[role] = by_role.get(role, 0) + float(sample["value"][1])
    assert found == FLEET_EXPECTED
