#!/usr/bin/env python3
"""Generate poolwatch's Grafana dashboards (stdlib only).

    python dashboards/generate.py           # rewrite dashboards/*.json
    python dashboards/generate.py --check   # exit 1 if the committed JSON is out of date

The JSON files are committed so Grafana can provision them directly; tests/test_dashboards.py
fails when they differ from what this script generates, so edit this script, never the JSON.

Queries use the raw poolwatch metrics only (no recording rules), so the dashboards work before
(or without) the alert rules being loaded. Every query selects with the dashboard variables
`$job`, `$instance` and `$pool`; every target uses the `${datasource}` variable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x dashboard schema
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
POOL = "db_client_connection_pool_name"
STATE = "db_client_connection_state"
RATE = "$__rate_interval"
# Matchers kept in constants: f-string expressions may not contain backslashes before 3.12.
USED = f'{STATE}="used"'
IDLE = f'{STATE}="idle"'
FAILED = 'error_type!=""'

Panel = dict[str, Any]


# --- selectors -------------------------------------------------------------------------------

def sel(*extra: str) -> str:
    """Label matchers for the dashboard variables, plus any extra matchers."""
    matchers = ['job=~"$job"', 'instance=~"$instance"', f'{POOL}=~"$pool"', *extra]
    return "{" + ", ".join(matchers) + "}"


def used(*extra: str) -> str:
    return f"db_client_connection_count{sel(USED, *extra)}"


def quantile(q: float, metric: str, by: str = "") -> str:
    """histogram_quantile over the selected series, aggregated by `le` plus `by`."""
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{sel()}[{RATE}])))"


# --- targets and panels ----------------------------------------------------------------------

def target(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series",
           ref: str = "A") -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": DATASOURCE,
        "refId": ref,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "format": fmt,
    }
    return t


def targets(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    """Range targets from (expr, legend) pairs, with refIds A, B, C..."""
    return [target(e, lg, ref=chr(ord("A") + i)) for i, (e, lg) in enumerate(pairs)]


def thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute",
            "steps": [{"color": color, "value": value} for value, color in steps]}


SATURATION_STEPS = thresholds((None, "green"), (0.8, "orange"), (1, "red"))


def _panel(kind: str, title: str, description: str, tgts: list[dict[str, Any]],
           defaults: dict[str, Any], options: dict[str, Any]) -> Panel:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
    }


def timeseries(title: str, description: str, tgts: list[dict[str, Any]], *, unit: str = "short",
               stack: bool = False, fill: int = 10, max_: float | None = None) -> Panel:
    defaults: dict[str, Any] = {
        "unit": unit,
        "min": 0,
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 60 if stack else fill,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
    }
    if max_ is not None:
        defaults["max"] = max_
    options = {
        "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"],
                   "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _panel("timeseries", title, description, tgts, defaults, options)


def unstacked_line(panel: Panel, series_name: str) -> Panel:
    """Draw one series (e.g. the pool's maximum) as a dashed, unstacked, unfilled line."""
    panel["fieldConfig"]["overrides"].append({
        "matcher": {"id": "byName", "options": series_name},
        "properties": [
            {"id": "custom.stacking", "value": {"mode": "none", "group": "A"}},
            {"id": "custom.fillOpacity", "value": 0},
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
        ],
    })
    return panel


def stat(title: str, description: str, expr: str, *, unit: str = "short",
         steps: dict[str, Any] | None = None) -> Panel:
    defaults = {"unit": unit, "color": {"mode": "thresholds"},
                "thresholds": steps or thresholds((None, "blue"))}
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value", "graphMode": "area", "justifyMode": "auto",
        "orientation": "auto", "textMode": "auto",
    }
    return _panel("stat", title, description, [target(expr, " ")], defaults, options)


def heatmap(title: str, description: str, metric: str) -> Panel:
    """Buckets of a histogram per interval; Grafana reads the `le` boundaries itself."""
    expr = f"sum by (le) (increase({metric}_bucket{sel()}[{RATE}]))"
    options = {
        "calculate": False,
        "cellGap": 1,
        "color": {"mode": "scheme", "scheme": "Oranges", "scale": "exponential",
                  "exponent": 0.5, "steps": 64, "fill": "dark-orange", "reverse": False},
        "filterValues": {"le": 1e-09},
        "rowsFrame": {"layout": "le"},
        "yAxis": {"axisPlacement": "left", "unit": "s", "reverse": False},
        "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
        "legend": {"show": True},
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
    }
    return _panel("heatmap", title, description,
                  [target(expr, "{{le}}", fmt="heatmap")], {"unit": "short"}, options)


def table(title: str, description: str, tgts: list[dict[str, Any]], *,
          hide: tuple[str, ...] = ("Time",), rename: dict[str, str] | None = None,
          units: dict[str, str] | None = None) -> Panel:
    """An instant-query table; several targets are merged into one row per label set."""
    transformations: list[dict[str, Any]] = []
    if len(tgts) > 1:
        transformations.append({"id": "merge", "options": {}})
    transformations.append({"id": "organize", "options": {
        "excludeByName": dict.fromkeys(hide, True), "renameByName": rename or {},
        "indexByName": {}}})
    panel = _panel("table", title, description, tgts, {"custom": {"align": "auto"}},
                   {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}})
    for name, unit in (units or {}).items():
        panel["fieldConfig"]["overrides"].append({
            "matcher": {"id": "byName", "options": name},
            "properties": [{"id": "unit", "value": unit}]})
    panel["transformations"] = transformations
    return panel


def instant(expr: str, ref: str, *, fmt: str = "table") -> dict[str, Any]:
    return target(expr, ref=ref, instant=True, fmt=fmt)


def bargauge(title: str, description: str, expr: str, legend: str) -> Panel:
    defaults = {"unit": "percentunit", "min": 0, "max": 1, "color": {"mode": "thresholds"},
                "thresholds": SATURATION_STEPS}
    options = {"orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
               "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "minVizHeight": 10, "minVizWidth": 0, "valueMode": "color", "namePlacement": "auto",
               "sizing": "auto"}
    return _panel("bargauge", title, description,
                  [target(expr, legend, instant=True)], defaults, options)


def row(title: str, *, repeat: str | None = None) -> Panel:
    r: Panel = {"type": "row", "title": title, "collapsed": False, "panels": []}
    if repeat:
        r["repeat"] = repeat
    return r


# --- layout ----------------------------------------------------------------------------------

class Grid:
    """Places panels left to right on Grafana's 24-column grid, wrapping to a new line."""

    WIDTH = 24

    def __init__(self) -> None:
        self.panels: list[Panel] = []
        self.x = 0
        self.y = 0
        self.line_height = 0

    def add(self, panel: Panel, w: int, h: int = 8) -> None:
        if self.x + w > self.WIDTH:
            self.newline()
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.line_height = max(self.line_height, h)

    def newline(self) -> None:
        self.y += self.line_height
        self.x = 0
        self.line_height = 0

    def add_row(self, panel: Panel) -> None:
        self.newline()
        self.add(panel, self.WIDTH, 1)
        self.newline()


# --- variables -------------------------------------------------------------------------------

def datasource_var() -> dict[str, Any]:
    return {"type": "datasource", "name": "datasource", "label": "Data source",
            "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
            "options": [], "includeAll": False, "multi": False}


def query_var(name: str, label: str, query: str, *, multi: bool = True) -> dict[str, Any]:
    """A label_values() variable; `All` selects everything with the regex `.*`."""
    return {
        "type": "query", "name": name, "label": label, "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-variable"}, "definition": query,
        "refresh": 2, "sort": 1, "regex": "", "hide": 0, "options": [], "current": {},
        "includeAll": True, "multi": multi, "allValue": ".*",
    }


def custom_var(name: str, label: str, values: list[str], default: str) -> dict[str, Any]:
    return {
        "type": "custom", "name": name, "label": label, "query": ",".join(values),
        "current": {"selected": True, "text": default, "value": default},
        "options": [{"selected": v == default, "text": v, "value": v} for v in values],
        "hide": 0, "includeAll": False, "multi": False,
    }


def standard_vars() -> list[dict[str, Any]]:
    """datasource, job, instance, pool: each narrows the next."""
    return [
        datasource_var(),
        query_var("job", "Job", "label_values(db_client_connection_count, job)"),
        query_var("instance", "Instance",
                  'label_values(db_client_connection_count{job=~"$job"}, instance)'),
        query_var("pool", "Pool",
                  'label_values(db_client_connection_count{job=~"$job", instance=~"$instance"}, '
                  f"{POOL})"),
        custom_var("topk", "Top k", ["5", "10", "20", "50"], "10"),
    ]


def alerts_annotation() -> dict[str, Any]:
    """Marks when a poolwatch alert fired for the selected pools."""
    return {
        "name": "poolwatch alerts", "datasource": DATASOURCE, "enable": True,
        "iconColor": "red", "hide": False, "step": "30s", "useValueForTime": False,
        "expr": f'ALERTS{{alertstate="firing", job=~"$job", instance=~"$instance", '
                f'{POOL}=~"$pool"}}',
        "titleFormat": "{{alertname}}", "textFormat": "{{instance}} {{" + POOL + "}}",
        "tagKeys": "severity",
    }


def dashboard(uid: str, title: str, description: str, grid: Grid) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["poolwatch", "database", "sqlalchemy"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [{"type": "dashboards", "title": "poolwatch", "tags": ["poolwatch"],
                   "asDropdown": False, "includeVars": True, "keepTime": True,
                   "targetBlank": False, "icon": "external link", "tooltip": "", "url": ""}],
        "annotations": {"list": [
            {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
             "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
             "name": "Annotations & Alerts", "type": "dashboard"},
            alerts_annotation(),
        ]},
        "templating": {"list": standard_vars()},
        "panels": grid.panels,
    }


# --- Pool overview ---------------------------------------------------------------------------

def pool_connection_panels(g: Grid) -> None:
    g.add(unstacked_line(timeseries(
        "Connections used / idle vs max",
        "Connections the pool holds, stacked by state, against the most it may open "
        "(summed over the selected instances).",
        targets(
            (f"sum({used()})", "used"),
            (f'sum(db_client_connection_count{sel(IDLE)})', "idle"),
            (f"sum(db_client_connection_max{sel()})", "max"),
        ), stack=True), "max"), 12)
    g.add(timeseries(
        "Saturation",
        "Connections in use as a share of the pool's maximum, per instance. "
        "DBPoolSaturationHigh fires above 80% sustained.",
        targets((f"sum by (job, instance) ({used()}) / "
                 f"sum by (job, instance) (db_client_connection_max{sel()})", "{{instance}}")),
        unit="percentunit", max_=1), 6)
    g.add(timeseries(
        "Waiting callers",
        "Callers waiting for a connection right now, per instance. Above zero with the pool "
        "full is exhaustion (DBPoolExhausted).",
        targets((f"sum by (job, instance) (db_client_connection_pending_requests{sel()})",
                 "{{instance}}"))), 6)


def pool_wait_panels(g: Grid) -> None:
    wait = "db_client_connection_wait_time_seconds"
    g.add(timeseries(
        "Wait time p50 / p95 / p99",
        "Time from asking the pool for a connection to getting one (or timing out).",
        targets(*[(quantile(q, wait), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)]),
        unit="s"), 6)
    g.add(heatmap("Wait time distribution", "Checkouts per wait-time bucket.", wait), 6)
    g.add(timeseries(
        "Longest current wait",
        "How long the longest-waiting caller has waited so far, per instance. Unlike the "
        "histogram, it grows while callers are still stuck.",
        targets((f"max by (job, instance) (poolwatch_connection_wait_longest_seconds{sel()})",
                 "{{instance}}")), unit="s"), 6)
    g.add(timeseries(
        "Checkout timeouts /s",
        "Checkouts that gave up after pool_timeout (each is a failed request).",
        targets((f"sum by (job, instance) (rate(db_client_connection_timeouts_total{sel()}"
                 f"[{RATE}]))", "{{instance}}")), unit="ops"), 6)


def pool_lifecycle_panels(g: Grid) -> None:
    g.add(timeseries(
        "Hold time p95",
        "How long callers keep a connection, checkout to checkin, per instance.",
        targets((quantile(0.95, "db_client_connection_use_time_seconds", "job, instance"),
                 "{{instance}}")), unit="s"), 8)
    g.add(timeseries(
        "Connections created /s",
        "New DBAPI connections opened, next to checkouts. Creations close to checkouts mean "
        "no reuse (DBConnectionChurnHigh).",
        targets(
            (f"sum(rate(db_client_connection_create_time_seconds_count{sel()}[{RATE}]))",
             "created"),
            (f"sum(rate(db_client_connection_wait_time_seconds_count{sel()}[{RATE}]))",
             "checkouts"),
        ), unit="ops"), 8)
    g.add(timeseries(
        "Leaked connections",
        "Connections held past the leak threshold now, and leaks seen per minute.",
        targets(
            (f"sum by (job, instance) (poolwatch_connections_leaked{sel()})",
             "held now {{instance}}"),
            (f"sum by (job, instance) (rate(poolwatch_connection_leaks_total{sel()}[{RATE}]))"
             " * 60", "leaks/min {{instance}}"),
        )), 8)
    g.add(timeseries(
        "Invalidations /s",
        "Connections discarded, by kind (hard, soft, pre_ping) and reason.",
        targets((f"sum by (kind, reason) (rate(poolwatch_connection_invalidations_total{sel()}"
                 f"[{RATE}]))", "{{kind}} {{reason}}")), unit="ops"), 8)
    g.add(timeseries(
        "Connection errors /s",
        "Failed attempts to open a database connection, by error type.",
        targets((f"sum by (error_type) (rate(poolwatch_connection_errors_total{sel()}"
                 f"[{RATE}]))", "{{error_type}}")), unit="ops"), 8)
    g.add(timeseries(
        "Instrumentation errors /s",
        "Errors inside poolwatch itself (should be zero), and statements whose summary was "
        "folded into 'other' because the per-pool cap was reached.",
        targets(
            (f"sum by (component) (rate(poolwatch_instrumentation_errors_total{sel()}"
             f"[{RATE}]))", "error {{component}}"),
            (f"sum(rate(poolwatch_query_summaries_folded_total{sel()}[{RATE}]))", "folded"),
        ), unit="ops"), 8)


def pool_statement_panels(g: Grid) -> None:
    op = "db_client_operation_duration_seconds"
    g.add(timeseries(
        "Statement latency p95 by summary",
        "95th percentile statement duration for the $topk slowest query summaries.",
        targets((f"topk($topk, {quantile(0.95, op, 'db_query_summary')})",
                 "{{db_query_summary}}")), unit="s"), 12)
    g.add(timeseries(
        "Statement errors /s",
        "Failed statements by query summary and error type.",
        targets((f"sum by (db_query_summary, error_type) (rate({op}_count"
                 f'{sel(FAILED)}[{RATE}]))', "{{db_query_summary}} {{error_type}}")),
        unit="ops"), 12)


def pool_config_panel(g: Grid) -> None:
    info_labels = "pool_class, pool_size, max_overflow, timeout, recycle, pre_ping"
    g.add(table(
        "Pool configuration",
        "The pool's settings as reported by poolwatch_pool_info, per instance.",
        [instant(f"max by (job, instance, {info_labels}) (poolwatch_pool_info{sel()})", "A")],
        hide=("Time", "Value")), 24, 6)


def pool_overview() -> dict[str, Any]:
    g = Grid()
    g.add_row(row("Pool $pool", repeat="pool"))
    pool_connection_panels(g)
    pool_wait_panels(g)
    pool_lifecycle_panels(g)
    pool_statement_panels(g)
    pool_config_panel(g)
    return dashboard(
        "poolwatch-pool-overview", "poolwatch / Pool overview",
        "One row per SQLAlchemy connection pool: connections, waits, timeouts, churn, leaks and "
        "statements, from poolwatch's metrics.", g)


# --- Fleet -----------------------------------------------------------------------------------

def saturation_by_pool() -> str:
    by = f"job, instance, {POOL}"
    return (f"sum by ({by}) ({used()}) / sum by ({by}) (db_client_connection_max{sel()})")


def fleet_stats(g: Grid) -> None:
    # Counted from db_client_connection_count: unbounded pools (NullPool) have no _max series.
    g.add(stat("Instances", "Instances exporting poolwatch metrics.",
               f"count(count by (job, instance) (db_client_connection_count{sel()}))"), 4, 4)
    g.add(stat("Pools", "Pools across all selected instances.",
               f"count(count by (job, instance, {POOL}) "
               f"(db_client_connection_count{sel()}))"), 4, 4)
    g.add(stat("Sum of pools' maxima",
               "The most connections the selected pools may open together: keep it below the "
               "database's max_connections.",
               f"sum(db_client_connection_max{sel()})"), 4, 4)
    g.add(stat("Connections open", "Connections open now across the fleet (used + idle).",
               f"sum(db_client_connection_count{sel()})"), 4, 4)
    g.add(stat("Callers waiting", "Callers waiting for a connection right now, fleet-wide.",
               f"sum(db_client_connection_pending_requests{sel()})",
               steps=thresholds((None, "green"), (1, "red"))), 4, 4)
    g.add(stat("Saturated pools", "Pools using 80% or more of their maximum now.",
               f"count(({saturation_by_pool()}) >= 0.8) or vector(0)",
               steps=thresholds((None, "green"), (1, "red"))), 4, 4)


def fleet_tables(g: Grid) -> None:
    g.add(bargauge("Saturation by instance and pool",
                   "Share of each pool's maximum in use now, most saturated first. Red is full.",
                   f"sort_desc({saturation_by_pool()})",
                   "{{instance}} {{" + POOL + "}}"), 12, 10)
    by = f"job, instance, {POOL}"
    g.add(table(
        "Pools by instance",
        "Every pool of every selected instance, now (timeouts over the last 5 minutes).",
        [
            instant(f'sum by ({by}) ({used()})', "A"),
            instant(f'sum by ({by}) (db_client_connection_count{sel(IDLE)})', "B"),
            instant(f"max by ({by}) (db_client_connection_max{sel()})", "C"),
            instant(f"max by ({by}) (db_client_connection_pending_requests{sel()})", "D"),
            instant(f"sum by ({by}) (increase(db_client_connection_timeouts_total{sel()}[5m]))",
                    "E"),
            instant(saturation_by_pool(), "F"),
        ],
        rename={"Value #A": "used", "Value #B": "idle", "Value #C": "max",
                "Value #D": "waiting", "Value #E": "timeouts (5m)", "Value #F": "saturation",
                POOL: "pool"},
        units={"saturation": "percentunit"}), 12, 10)


def fleet_timeseries(g: Grid) -> None:
    g.add(unstacked_line(timeseries(
        "Connections in use vs sum of maxima",
        "Fleet-wide connections by state, against the sum of the pools' maxima.",
        targets(
            (f"sum({used()})", "used"),
            (f'sum(db_client_connection_count{sel(IDLE)})', "idle"),
            (f"sum(db_client_connection_max{sel()})", "sum of maxima"),
        ), stack=True), "sum of maxima"), 12)
    g.add(timeseries(
        "Most saturated pools",
        "The $topk most saturated pools over time.",
        targets((f"topk($topk, {saturation_by_pool()})", "{{instance}} {{" + POOL + "}}")),
        unit="percentunit", max_=1), 12)
    by = f"job, instance, {POOL}"
    g.add(timeseries(
        "Checkout timeouts /s by instance", "Timed-out checkouts per instance and pool.",
        targets((f"sum by ({by}) (rate(db_client_connection_timeouts_total{sel()}[{RATE}]))",
                 "{{instance}} {{" + POOL + "}}")), unit="ops"), 8)
    g.add(timeseries(
        "Wait time p95 by instance", "95th percentile wait for a connection per instance and pool.",
        targets((quantile(0.95, "db_client_connection_wait_time_seconds", by),
                 "{{instance}} {{" + POOL + "}}")), unit="s"), 8)
    g.add(timeseries(
        "Connections created /s by instance",
        "New connections opened per instance and pool; a fleet-wide rise is a connection storm.",
        targets((f"sum by ({by}) (rate(db_client_connection_create_time_seconds_count{sel()}"
                 f"[{RATE}]))", "{{instance}} {{" + POOL + "}}")), unit="ops"), 8)


def fleet() -> dict[str, Any]:
    g = Grid()
    fleet_stats(g)
    g.newline()
    fleet_tables(g)
    g.newline()
    fleet_timeseries(g)
    return dashboard(
        "poolwatch-fleet", "poolwatch / Fleet",
        "Every instance and pool of a service: capacity against the database, saturation, "
        "timeouts and churn.", g)


# --- output ----------------------------------------------------------------------------------

DASHBOARDS = {
    "poolwatch-pool-overview.json": pool_overview,
    "poolwatch-fleet.json": fleet,
}


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """File name -> JSON text, for every dashboard."""
    return {name: render(build()) for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a committed file differs")
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    args = parser.parse_args(argv)
    stale = []
    for name, text in generate().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python dashboards/generate.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
