"""The Grafana dashboards: generated with Grafana's SDK and committed, valid against Grafana's
published dashboard schema, provisioning-ready, use the variables everywhere, query only contract
metrics (and postgres_exporter's, beside them), and every query parses as PromQL."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from tests.support.dashboards import (
    DASHBOARD_DIR,
    REPO,
    SCHEMA_FILE,
    load_dashboards,
    panels,
    parse_label_values,
    queries,
    schema_errors,
    substitute,
    variable_query,
    variables,
)
from tests.support.services import prometheus_binary

# Every series name a dashboard may query (metrics contract + poolwatch's own + ALERTS).
CONTRACT_METRICS = {
    "db_client_connection_count", "db_client_connection_max", "db_client_connection_idle_max",
    "db_client_connection_idle_min", "db_client_connection_pending_requests",
    "db_client_connection_timeouts_total",
    *(f"db_client_connection_{h}_seconds_{s}" for h in ("wait_time", "use_time", "create_time")
      for s in ("bucket", "sum", "count")),
    *(f"db_client_operation_duration_seconds_{s}" for s in ("bucket", "sum", "count")),
    "poolwatch_connection_invalidations_total", "poolwatch_connections_leaked",
    "poolwatch_connection_leaks_total", "poolwatch_connection_errors_total",
    "poolwatch_pool_info", "poolwatch_instrumentation_errors_total",
    "poolwatch_query_summaries_folded_total", "poolwatch_connection_wait_longest_seconds",
    "poolwatch_server_connections_max",
    "ALERTS",
}
# postgres_exporter's series, read beside poolwatch's where a user runs it (issue #16).
POSTGRES_EXPORTER_METRICS = {"pg_stat_activity_count"}
# The panels the issues ask for, by dashboard title.
REQUIRED_PANELS = {
    "poolwatch / Pool overview": {
        "Connections used / idle vs max", "Saturation", "Waiting callers",
        "Wait time p50 / p95 / p99", "Wait time distribution", "Longest current wait",
        "Checkout timeouts /s", "Hold time p95", "Connections created /s", "Leaked connections",
        "Leaks seen /min", "Invalidations /s", "Connection errors /s",
        "Instrumentation errors /s", "Query summaries folded /s",
        "Statement latency p95 by summary", "Statement errors /s", "Pool configuration",
    },
    "poolwatch / Fleet": {
        "Sum of pools' maxima", "Saturation by instance and pool", "Pools by instance",
        "Saturated pools", "Instances", "Connections created /s by instance",
        # per database server (issue #16 item 3)
        "Server connection limit", "Fleet demand / limit", "Open connections / limit",
        "Fleet demand", "Demand, open connections and limit", "Demand by service",
        "More instances that fit, by service", "Instances on this server",
        # beside postgres_exporter (issue #16 item 4)
        "Server's connections vs pools', by pool", "Server's connections by database and state",
        "Pools against pg_stat_activity",
    },
}
DASHBOARDS = load_dashboards()
VALUES = {"datasource": "prometheus", "job": ".*", "instance": ".*", "role": ".*", "pool": ".*",
          "server": ".*", "port": ".*", "topk": "10"}
SELECTORS = ('job=~"$job"', 'instance=~"$instance"', 'role=~"$role"',
             'db_client_connection_pool_name=~"$pool"')


def metrics_of(expr: str) -> set[str]:
    return set(re.findall(r"([a-zA-Z_:][\w:]*)\{", expr))


def panel(board: str, title: str) -> dict[str, Any]:
    return next(p for p in panels(DASHBOARDS[board]) if p["title"] == title)


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate", DASHBOARD_DIR / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


needs_sdk = pytest.mark.skipif(sys.version_info < (3, 11),
                               reason="grafana-foundation-sdk needs Python 3.11 or later")


@needs_sdk
def test_committed_json_is_what_the_generator_produces() -> None:
    generator = load_generator()
    generated = generator.generate()
    assert set(generated) == set(DASHBOARDS) == {"poolwatch-pool-overview.json",
                                                 "poolwatch-fleet.json"}
    for name, text in generated.items():
        assert (DASHBOARD_DIR / name).read_text() == text, \
            f"{name} is stale: run python dashboards/generate.py"
    # Built with Grafana's SDK, not by hand.
    from grafana_foundation_sdk.builders.dashboard import Dashboard
    assert all(isinstance(build(), Dashboard) for build in generator.DASHBOARDS.values())


@needs_sdk
def test_generator_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    generator = load_generator()
    assert generator.main(["--out", str(tmp_path)]) == 0
    assert generator.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "poolwatch-fleet.json").write_text("{}")
    assert generator.main(["--check", "--out", str(tmp_path)]) == 1


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_matches_grafanas_published_schema(name: str) -> None:
    assert schema_errors(DASHBOARDS[name]) == []


def test_schema_check_rejects_the_stale_fields() -> None:
    """The fields the hand-written generator used to write, each caught by the check."""
    board = copy.deepcopy(DASHBOARDS["poolwatch-fleet.json"])
    board["templating"]["list"][1]["current"] = {}
    annotation = board["annotations"]["list"][1]
    annotation.update(expr=annotation["target"]["expr"], step="30s")
    pools = next(p for p in board["panels"] if p["title"] == "Pools by instance")
    pools["options"]["footer"] = {"show": False}
    saturation = next(p for p in board["panels"] if p["title"] == "Most saturated pools")
    saturation["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] = "stacked"
    errors = "\n".join(schema_errors(board))
    assert "templating/list/1/current: 'text' is a required property" in errors
    assert "annotations/list/1: Additional properties are not allowed ('expr', 'step'" in errors
    assert "Pools by instance options/: Additional properties are not allowed ('footer'" in errors
    assert "Most saturated pools custom/stacking/mode: 'stacked' is not one of" in errors
    assert len(schema_errors(board)) == 5  # current's text and value, and one each


def test_vendored_schema_names_its_source() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["source"].startswith("npm @grafana/schema@13.2.3 ")
    assert set(schema["panels"]) >= {p["type"] for b in DASHBOARDS.values() for p in panels(b)
                                     if p["type"] != "row"}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_is_provisioning_ready(name: str) -> None:
    board = DASHBOARDS[name]
    assert "id" not in board and "__inputs" not in board  # provisioned, not imported
    assert board["schemaVersion"] == 41
    assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"])
    assert board["title"] in REQUIRED_PANELS
    assert len({b["uid"] for b in DASHBOARDS.values()}) == len(DASHBOARDS)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_variables_datasource_job_instance_role_pool(name: str) -> None:
    found = variables(DASHBOARDS[name])
    expected = ["datasource", "job", "instance", "role", "pool"]
    if name == "poolwatch-fleet.json":
        expected += ["server", "port"]
    assert list(found) == [*expected, "topk"]
    assert found["datasource"]["type"] == "datasource"
    assert found["datasource"]["query"] == "prometheus"
    labels = {"job": "job", "instance": "instance", "role": "role",
              "pool": "db_client_connection_pool_name", "server": "server_address",
              "port": "server_port"}
    for var in expected[1:]:
        assert found[var]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert found[var]["includeAll"] and found[var]["allValue"] == ".*"
        assert found[var]["current"] == {"text": ["All"], "value": ["$__all"], "selected": True}
        selector, label = parse_label_values(variable_query(found[var]))
        assert label == labels[var]
        # Each narrows the next: the variables before it select its values.
        for before in expected[1:expected.index(var)]:
            assert f'=~"${before}"' in (selector or ""), (var, before)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_required_panels_present(name: str) -> None:
    board = DASHBOARDS[name]
    titles = {p["title"] for p in panels(board)}
    assert REQUIRED_PANELS[board["title"]] <= titles


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_target_uses_the_datasource_variable_and_unique_ref_ids(name: str) -> None:
    for panel in panels(DASHBOARDS[name]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_query_filters_by_the_variables_and_uses_contract_metrics(name: str) -> None:
    for q in queries(DASHBOARDS[name]):
        metrics = metrics_of(q.expr)
        assert metrics, q.expr
        assert metrics <= CONTRACT_METRICS | POSTGRES_EXPORTER_METRICS, \
            f"{q.where}: unknown {metrics - CONTRACT_METRICS - POSTGRES_EXPORTER_METRICS}"
        if metrics & CONTRACT_METRICS:
            for var in SELECTORS:
                assert var in q.expr, f"{q.where}: {q.expr} lacks {var}"
        if "poolwatch_pool_info{" in q.expr and "server_address" in q.expr:
            assert 'server_address=~"$server", server_port=~"$port"' in q.expr, q.expr
        # postgres_exporter's series are the server's, not poolwatch's job: only the pool
        # name (as application_name) can select them, and the all-clients panel has none.
        if "pg_stat_activity_count{" in q.expr and "by database" not in q.where:
            assert 'pg_stat_activity_count{application_name=~"$pool"}' in q.expr, q.expr
        # Range functions over counters/histograms use Grafana's safe interval.
        if "rate(" in q.expr and "[5m]" not in q.expr:
            assert "[$__rate_interval]" in q.expr, q.expr


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_layout_fits_the_grid_without_overlap(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    ids = []
    for panel in panels(DASHBOARDS[name]):
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                 for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        ids.append(panel["id"])
    assert len(ids) == len(set(ids))


def test_pool_overview_repeats_a_row_per_pool_and_has_a_heatmap() -> None:
    board = DASHBOARDS["poolwatch-pool-overview.json"]
    first = board["panels"][0]
    assert (first["type"], first.get("repeat")) == ("row", "pool")
    assert [p["type"] for p in board["panels"]].count("row") == 1  # everything repeats per pool
    heatmap = next(p for p in panels(board) if p["type"] == "heatmap")
    assert heatmap["targets"][0]["format"] == "heatmap"
    assert "_bucket" in heatmap["targets"][0]["expr"]
    assert heatmap["options"]["calculate"] is False
    connections = panel("poolwatch-pool-overview.json", "Connections used / idle vs max")
    assert connections["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    assert [t["legendFormat"] for t in connections["targets"]] == ["used", "idle", "max"]


def steps(p: dict[str, Any]) -> list[tuple[float | None, str]]:
    return [(s["value"], s["color"])
            for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_saturation_panels_mark_80_and_100_percent() -> None:
    for board, title in [("poolwatch-pool-overview.json", "Saturation"),
                         ("poolwatch-fleet.json", "Most saturated pools"),
                         ("poolwatch-fleet.json", "Saturation by instance and pool")]:
        p = panel(board, title)
        defaults = p["fieldConfig"]["defaults"]
        assert (defaults["unit"], defaults["min"], defaults["max"]) == ("percentunit", 0, 1)
        assert steps(p) == [(None, "green"), (0.8, "orange"), (1.0, "red")], title
        if p["type"] == "timeseries":  # the thresholds are drawn, not only used for colour
            assert defaults["custom"]["thresholdsStyle"] == {"mode": "dashed"}


def test_instrumentation_errors_and_folded_summaries_are_apart() -> None:
    errors = panel("poolwatch-pool-overview.json", "Instrumentation errors /s")
    assert {m for t in errors["targets"] for m in metrics_of(t["expr"])} == {
        "poolwatch_instrumentation_errors_total"}
    folded = panel("poolwatch-pool-overview.json", "Query summaries folded /s")
    assert {m for t in folded["targets"] for m in metrics_of(t["expr"])} == {
        "poolwatch_query_summaries_folded_total"}


def test_leaked_gauge_and_leak_rate_are_on_separate_panels() -> None:
    held = panel("poolwatch-pool-overview.json", "Leaked connections")
    assert [metrics_of(t["expr"]) for t in held["targets"]] == [{"poolwatch_connections_leaked"}]
    assert held["fieldConfig"]["defaults"]["unit"] == "short"
    seen = panel("poolwatch-pool-overview.json", "Leaks seen /min")
    assert [metrics_of(t["expr"]) for t in seen["targets"]] == [
        {"poolwatch_connection_leaks_total"}]
    assert seen["fieldConfig"]["defaults"]["unit"] == "opm"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_no_panel_mixes_rates_and_levels_and_units_fit(name: str) -> None:
    """A panel's series share one axis, so they share one kind: all rates or all levels. Titles
    that name a rate get a rate unit; quantiles are seconds; ratios are percent."""
    for p in panels(DASHBOARDS[name]):
        if p["type"] == "row" or p["type"] == "table":
            continue
        exprs = [t["expr"] for t in p["targets"]]
        kinds = {bool(re.search(r"\b(rate|increase)\(", e)) for e in exprs}
        assert len(kinds) == 1, f"{p['title']} mixes rates and levels"
        unit = p["fieldConfig"]["defaults"].get("unit")
        if p["title"].endswith("/s") or " /s " in p["title"]:
            assert unit == "ops", p["title"]
        if p["title"].endswith("/min"):
            assert unit == "opm", p["title"]
        if any("histogram_quantile" in e for e in exprs):
            assert unit == "s", p["title"]
        if "Saturation" in p["title"] or "/ limit" in p["title"] or "share" in p["description"]:
            assert unit == "percentunit", p["title"]


def test_fleet_groups_by_role_so_a_primary_and_its_replicas_stay_apart() -> None:
    for title in ("Sum of pools' maxima", "Connections open", "Fleet demand",
                  "Connections in use vs sum of maxima"):
        for t in panel("poolwatch-fleet.json", title)["targets"]:
            assert re.match(r"sum by \((server_address, server_port, )?role\)", t["expr"]), \
                (title, t["expr"])
            assert "{{role}}" in t["legendFormat"]
    for t in panel("poolwatch-fleet.json", "Pools by instance")["targets"]:
        assert "by (job, instance, role, db_client_connection_pool_name)" in t["expr"]


def test_fleet_has_a_row_per_database_server_in_raw_promql() -> None:
    board = DASHBOARDS["poolwatch-fleet.json"]
    rows = [p for p in board["panels"] if p["type"] == "row"]
    assert [(r["title"], r.get("repeat"), r["collapsed"]) for r in rows] == [
        ("Server $server", "server", False),
        ("PostgreSQL's view (postgres_exporter)", None, True)]
    start = board["panels"].index(rows[0])
    in_row = [p["title"] for p in board["panels"][start + 1:] if p["type"] != "row"]
    assert in_row == ["Server connection limit", "Fleet demand / limit",
                      "Open connections / limit", "Fleet demand",
                      "Demand, open connections and limit", "Demand by service",
                      "More instances that fit, by service", "Instances on this server"]
    for title in in_row:
        for t in panel("poolwatch-fleet.json", title)["targets"]:
            # Joined to the server through the pool's info series; never a recording rule.
            assert "group_left (server_address, server_port) max by (job, instance, " \
                   "db_client_connection_pool_name, server_address, server_port) " \
                   "(poolwatch_pool_info{" in t["expr"], (title, t["expr"])
            assert "poolwatch:" not in t["expr"]
    limit = panel("poolwatch-fleet.json", "Server connection limit")["targets"][0]["expr"]
    assert limit.startswith("min by (server_address, server_port) ((min by (job, instance, "
                            "role, db_client_connection_pool_name) "
                            "(poolwatch_server_connections_max{")
    fits = panel("poolwatch-fleet.json", "More instances that fit, by service")
    assert fits["targets"][0]["expr"].startswith("floor(clamp_min((min by (server_address, "
                                                 "server_port)")
    assert fits["targets"][0]["legendFormat"] == "{{job}}"


def test_postgres_exporter_row_lines_pools_up_by_application_name() -> None:
    board = DASHBOARDS["poolwatch-fleet.json"]
    row = board["panels"][-1]
    assert row["collapsed"] and [p["title"] for p in row["panels"]] == [
        "Server's connections vs pools', by pool", "Server's connections by database and state",
        "Pools against pg_stat_activity"]
    versus = row["panels"][0]["targets"]
    assert [metrics_of(t["expr"]) for t in versus] == [{"pg_stat_activity_count"},
                                                       {"db_client_connection_count"}]
    table = row["panels"][2]["targets"]
    assert 'label_replace(sum by (db_client_connection_pool_name) (db_client_connection_count{' \
           in table[0]["expr"]
    assert '"application_name", "$1", "db_client_connection_pool_name", "(.*)")' \
           in table[0]["expr"]


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query (variables filled in) as a recording rule expression."""
    rules: list[dict[str, Any]] = []
    for board in DASHBOARDS.values():
        exprs = [q.expr for q in queries(board)]
        for var in variables(board).values():
            if var["type"] == "query":
                selector, _ = parse_label_values(variable_query(var))
                exprs.append(selector or "up")
        rules += [{"record": f"dashboard:query_{len(rules) + i}", "expr": substitute(e, VALUES)}
                  for i, e in enumerate(exprs)]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([prometheus_binary("promtool"), "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_runbooks_refer_only_to_panels_that_exist() -> None:
    titles = {board["title"].split(" / ")[1]: {p["title"] for p in panels(board)}
              for board in DASHBOARDS.values()}
    text = (REPO / "docs" / "runbooks.md").read_text()
    refs = re.findall(r"\*\*(Pool overview|Fleet) ›\s+([^*]+?)\*\*", text.replace("\n", " "))
    assert len(refs) >= 15
    for dashboard, panel in refs:
        panel = re.sub(r"\s+", " ", panel)
        assert panel in titles[dashboard], f"runbooks.md refers to missing panel {panel!r}"


# A synthetic fleet for the per-server panels, exact to the connection: a primary (limit 100)
# and a replica (limit 40); service `api` has 3 instances, each with a writer pool of 10 on the
# primary (5 open) and a reader pool of 10 on the replica (4 open); service `worker` has 2
# instances with a writer pool of 15 on the primary (6 open).
PRIMARY = {"server_address": "10.0.0.1", "server_port": "5432"}
REPLICA = {"server_address": "10.0.0.2", "server_port": "5432"}
FLEET = [  # job, instance, pool, role, server, max, used, idle, the limit the pool reads
    *[("api", f"api-{i}:9464", "orders", "writer", PRIMARY, 10, 3, 2, 100) for i in (1, 2, 3)],
    *[("api", f"api-{i}:9464", "orders-ro", "reader", REPLICA, 10, 1, 3, 40) for i in (1, 2, 3)],
    *[("worker", f"worker-{i}:9464", "jobs", "writer", PRIMARY, 15, 6, 0, 100) for i in (1, 2)],
]


def on(server: dict[str, str], **labels: str) -> dict[str, str]:
    return {**server, **labels}


# Panel title, refId -> every sample the query returns for the fleet above.
FLEET_PANELS: dict[tuple[str, str], list[tuple[dict[str, str], float]]] = {
    ("Server connection limit", "A"): [(PRIMARY, 100), (REPLICA, 40)],
    ("Fleet demand / limit", "A"): [(PRIMARY, 0.6), (REPLICA, 0.75)],
    ("Open connections / limit", "A"): [(PRIMARY, 0.27), (REPLICA, 0.3)],
    ("Fleet demand", "A"): [(on(PRIMARY, role="writer"), 60), (on(REPLICA, role="reader"), 30)],
    ("Demand, open connections and limit", "A"): [(PRIMARY, 60), (REPLICA, 30)],
    ("Demand, open connections and limit", "B"): [(PRIMARY, 27), (REPLICA, 12)],
    ("Demand, open connections and limit", "C"): [(PRIMARY, 100), (REPLICA, 40)],
    ("Demand by service", "A"): [(on(PRIMARY, job="api"), 0.3), (on(PRIMARY, job="worker"), 0.3),
                                 (on(REPLICA, job="api"), 0.75)],
    # Headroom 40 on the primary: 4 more api instances (10 each) or 2 workers (15 each); 10 on
    # the replica: 1 more api instance.
    ("More instances that fit, by service", "A"): [
        (on(PRIMARY, job="api"), 4), (on(PRIMARY, job="worker"), 2), (on(REPLICA, job="api"), 1)],
    ("Instances on this server", "C"): [
        *[(on(PRIMARY, job="api", instance=f"api-{i}:9464", role="writer"), 0.1) for i in (1, 2, 3)],
        *[(on(PRIMARY, job="worker", instance=f"worker-{i}:9464", role="writer"), 0.15)
          for i in (1, 2)],
        *[(on(REPLICA, job="api", instance=f"api-{i}:9464", role="reader"), 0.25) for i in (1, 2, 3)],
    ],
    # Without the server join, still apart by role.
    ("Sum of pools' maxima", "A"): [({"role": "writer"}, 60), ({"role": "reader"}, 30)],
}


# The same fleet against a primary that allows 50: demand 60 is over budget, nothing more fits
# there (never a negative count), the replica is unchanged.
OVER_BUDGET = [(*row[:8], 50 if row[4] is PRIMARY else row[8]) for row in FLEET]
OVER_BUDGET_PANELS: dict[tuple[str, str], list[tuple[dict[str, str], float]]] = {
    ("Fleet demand / limit", "A"): [(PRIMARY, 1.2), (REPLICA, 0.75)],
    ("More instances that fit, by service", "A"): [
        (on(PRIMARY, job="api"), 0), (on(PRIMARY, job="worker"), 0), (on(REPLICA, job="api"), 1)],
}


def promtool_group(fleet: list[Any], expected: dict[tuple[str, str], list[Any]]) -> dict[str, Any]:
    """A promtool test group: the fleet's series, and each panel query's expected samples."""
    def text(name: str, value: float, labels: dict[str, str]) -> dict[str, str]:
        body = ", ".join(f'{k}="{v}"' for k, v in labels.items())
        return {"series": f"{name}{{{body}}}", "values": f"{value}x5"}

    series = []
    for job, instance, pool, role, server, max_, used, idle, limit in fleet:
        labels = {"job": job, "instance": instance, "role": role,
                  "db_client_connection_pool_name": pool}
        state = "db_client_connection_state"
        series += [
            text("poolwatch_pool_info", 1,
                 {**labels, "pool_class": "QueuePool", "db_namespace": "shop", **server}),
            text("db_client_connection_max", max_, labels),
            text("db_client_connection_count", used, {**labels, state: "used"}),
            text("db_client_connection_count", idle, {**labels, state: "idle"}),
            text("poolwatch_server_connections_max", limit, labels),
        ]
    exprs = {(q.where, q.ref): q.expr for q in queries(DASHBOARDS["poolwatch-fleet.json"])}
    tests = [{"expr": substitute(exprs[key], VALUES), "eval_time": "2m",
              "exp_samples": [{"labels": "{" + ", ".join(f'{k}="{v}"' for k, v in
                                                       sorted(labels.items())) + "}",
                               "value": value} for labels, value in samples]}
             for key, samples in expected.items()]
    return {"interval": "1m", "input_series": series, "promql_expr_test": tests}


def test_fleet_panels_on_a_synthetic_fleet_with_a_primary_and_a_replica(tmp_path: Path) -> None:
    """promtool evaluates each per-server query over the synthetic fleet: limits, demand, open
    connections, shares and the instances that still fit, per server and exactly."""
    path = tmp_path / "fleet_test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [], "evaluation_interval": "1m", "tests": [
        promtool_group(FLEET, FLEET_PANELS), promtool_group(OVER_BUDGET, OVER_BUDGET_PANELS)]}))
    result = subprocess.run([prometheus_binary("promtool"), "test", "rules", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_postgres_exporter_query_counts_by_application_name(postgres_url: str) -> None:
    """The shipped postgres_exporter query runs on the real PostgreSQL and counts this test's
    own connection under its application_name."""
    spec = yaml.safe_load((DASHBOARD_DIR / "postgres_exporter-queries.yaml").read_text())
    activity = spec["pg_stat_activity"]
    columns = {name: meta["usage"] for m in activity["metrics"] for name, meta in m.items()}
    assert columns == {"datname": "LABEL", "state": "LABEL", "application_name": "LABEL",
                       "count": "GAUGE", "max_tx_duration": "GAUGE"}
    name = f"poolwatch-dashboards-{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_url, poolclass=sa.NullPool,
                              connect_args={"application_name": name})
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(activity["query"])).mappings().all()
            database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
    finally:
        engine.dispose()
    assert [(r["datname"], r["state"], r["count"]) for r in rows
            if r["application_name"] == name] == [(database, "active", 1)]
    assert set(rows[0]) == set(columns)
