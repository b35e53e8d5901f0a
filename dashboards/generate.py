#!/usr/bin/env python3
"""Generate poolwatch's Grafana dashboards with Grafana's own SDK (grafana-foundation-sdk).

    python dashboards/generate.py           # rewrite dashboards/*.json
    python dashboards/generate.py --check   # exit 1 if the committed JSON is out of date

Needs the `dashboards` extra (`pip install -e '.[dashboards]'`, Python 3.11+ like the SDK). The
JSON files are committed so Grafana can provision them directly; tests/test_dashboards.py fails
when they differ from what this script writes, and checks them against Grafana's published
dashboard schema, so edit this script, never the JSON.

Queries read the raw poolwatch metrics only (never recording rules), so the dashboards work
before, or without, the alert rules. Every poolwatch query selects with the variables `$job`,
`$instance`, `$role` and `$pool`; every target uses the `${datasource}` variable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models import table as table_models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

__all__ = ["DASHBOARDS", "generate", "main"]

HERE = Path(__file__).resolve().parent
DATASOURCE = common.DataSourceRef(type_val="prometheus", uid="${datasource}")
POOL = "db_client_connection_pool_name"
STATE = "db_client_connection_state"
RATE = "$__rate_interval"
# The user's constant label poolwatch's docs and alerts use for primary / replica.
ROLE = "role"
# Each per-pool series, identified; `role` kept so every aggregate can still group by it.
KEY = f"job, instance, {ROLE}, {POOL}"
JOIN = f"job, instance, {POOL}"
SERVER = "server_address, server_port"
# Matchers kept in constants: f-string expressions may not contain backslashes before 3.12.
USED = f'{STATE}="used"'
IDLE = f'{STATE}="idle"'
FAILED = 'error_type!=""'
ON_SERVER = 'server_address=~"$server", server_port=~"$port"'
SATURATION = ((None, "green"), (0.8, "orange"), (1.0, "red"))  # DBPoolSaturationHigh at 80 %

PanelBuilder = Builder[dashboard.Panel]
Steps = tuple[tuple[float | None, str], ...]


# --- selectors -------------------------------------------------------------------------------

def sel(*extra: str) -> str:
    """Label matchers for the dashboard variables, plus any extra matchers."""
    matchers = ['job=~"$job"', 'instance=~"$instance"', f'{ROLE}=~"$role"', f'{POOL}=~"$pool"',
                *extra]
    return "{" + ", ".join(matchers) + "}"


def used(*extra: str) -> str:
    return f"db_client_connection_count{sel(USED, *extra)}"


def quantile(q: float, metric: str, by: str = "") -> str:
    """histogram_quantile over the selected series, aggregated by `le` plus `by`."""
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{sel()}[{RATE}])))"


def saturation_by_pool() -> str:
    return f"sum by ({KEY}) ({used()}) / sum by ({KEY}) (db_client_connection_max{sel()})"


# The fleet's view of each database server. poolwatch_pool_info carries the server each pool
# addresses; joining on it puts every per-pool gauge under (server_address, server_port).
def on_server(expr: str) -> str:
    """`expr`, aggregated per pool (by KEY), with its pool's server labels added."""
    info = f"max by ({JOIN}, {SERVER}) (poolwatch_pool_info{sel(ON_SERVER)})"
    return f"({expr}) * on ({JOIN}) group_left ({SERVER}) {info}"


def pool_demand() -> str:
    return on_server(f"max by ({KEY}) (db_client_connection_max{sel()})")


def pool_open() -> str:
    return on_server(f"sum by ({KEY}) (db_client_connection_count{sel()})")


def server_limit() -> str:
    """The smallest limit any pool on the server reads (the role's, the database's, or the
    server's max_connections less the reserved slots)."""
    limits = on_server(f"min by ({KEY}) (poolwatch_server_connections_max{sel()})")
    return f"min by ({SERVER}) ({limits})"


def server_demand(by: str = "") -> str:
    group = f"{SERVER}, {by}" if by else SERVER
    return f"sum by ({group}) ({pool_demand()})"


def server_open(by: str = "") -> str:
    group = f"{SERVER}, {by}" if by else SERVER
    return f"sum by ({group}) ({pool_open()})"


def share_of_limit(expr: str) -> str:
    """`expr` (grouped by the server and more) as a share of its server's limit."""
    return f"{expr} / on ({SERVER}) group_left {server_limit()}"


def instances_that_fit() -> str:
    """Per service: the headroom under the limit over one instance's demand, rounded down."""
    headroom = f"({server_limit()} - {server_demand()})"
    per_instance = f"avg by ({SERVER}, job) ({server_demand('job, instance')})"
    return f"floor(clamp_min({headroom} / on ({SERVER}) group_right {per_instance}, 0))"


# --- targets and field settings --------------------------------------------------------------

def query(expr: str, legend: str = "__auto", ref: str = "A", *, instant: bool = False,
          fmt: PromQueryFormat = PromQueryFormat.TIME_SERIES) -> prometheus.Dataquery:
    q = (prometheus.Dataquery().datasource(DATASOURCE).ref_id(ref).expr(expr)
         .legend_format(legend).format(fmt))
    return q.instant() if instant else q.range()


def queries(*pairs: tuple[str, str]) -> list[Builder[Any]]:
    """Range queries from (expr, legend) pairs, with refIds A, B, C..."""
    return [query(e, lg, chr(ord("A") + i)) for i, (e, lg) in enumerate(pairs)]


def thresholds(*steps: tuple[float | None, str]) -> builders.ThresholdsConfig:
    return (builders.ThresholdsConfig().mode(dashboard.ThresholdsMode.ABSOLUTE)
            .steps([dashboard.Threshold(value=v, color=c) for v, c in steps]))


def color(mode: dashboard.FieldColorModeId) -> builders.FieldColor:
    return builders.FieldColor().mode(mode)


def reduce_last() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


# --- panels ----------------------------------------------------------------------------------

class _Built(Builder[Any]):
    """Something already built (a panel placed on the grid, a table with a setting removed),
    handed to the SDK's builders as is."""

    def __init__(self, built: Any) -> None:
        self.built = built

    def build(self) -> Any:
        return self.built


def timeseries_panel(title: str, description: str, targets: list[Builder[Any]], *,
                     unit: str = "short", stack: bool = False, max_: float | None = None,
                     steps: Steps | None = None) -> timeseries.Panel:
    """A line chart from 0; `steps` draws its thresholds as dashed lines."""
    panel = (
        timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
        .targets(targets).unit(unit).min(0)
        .color_scheme(color(dashboard.FieldColorModeId.PALETTE_CLASSIC))
        .draw_style(common.GraphDrawStyle.LINE).line_width(1)
        .fill_opacity(60 if stack else 10).show_points(common.VisibilityMode.NEVER)
        .span_nulls(False)
        .stacking(common_builders.StackingConfig().mode(
            common.StackingMode.NORMAL if stack else common.StackingMode.NONE).group("A"))
        .legend(common_builders.VizLegendOptions()
                .display_mode(common.LegendDisplayMode.TABLE)
                .placement(common.LegendPlacement.BOTTOM).show_legend(True)
                .calcs(["lastNotNull", "max"]))
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                 .sort(common.SortOrder.DESCENDING))
    )
    if max_ is not None:
        panel = panel.max(max_)
    if steps is None:
        return panel.thresholds(thresholds((None, "green")))
    return (panel.thresholds(thresholds(*steps)).thresholds_style(
        common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)))


def limit_line(panel: timeseries.Panel, matcher: str) -> timeseries.Panel:
    """Draw the series matching `matcher` (a maximum, a limit) as dashed, unstacked, unfilled
    red lines over the others."""
    return panel.override_by_regexp(matcher, [
        dashboard.DynamicConfigValue(id_val="custom.stacking",
                                     value={"mode": "none", "group": "A"}),
        dashboard.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
        dashboard.DynamicConfigValue(id_val="custom.lineStyle",
                                     value={"fill": "dash", "dash": [10, 10]}),
        dashboard.DynamicConfigValue(id_val="color",
                                     value={"mode": "fixed", "fixedColor": "red"}),
    ])


def stat_panel(title: str, description: str, targets: list[Builder[Any]], *,
               unit: str = "short", steps: Steps = ((None, "blue"),)) -> stat.Panel:
    return (
        stat.Panel().title(title).description(description).datasource(DATASOURCE)
        .targets(targets).unit(unit).thresholds(thresholds(*steps))
        .color_scheme(color(dashboard.FieldColorModeId.THRESHOLDS))
        .reduce_options(reduce_last())
        .color_mode(common.BigValueColorMode.VALUE).graph_mode(common.BigValueGraphMode.AREA)
        .justify_mode(common.BigValueJustifyMode.AUTO).orientation(common.VizOrientation.AUTO)
        .text_mode(common.BigValueTextMode.AUTO).wide_layout(True).show_percent_change(False)
        .percent_change_color_mode(common.PercentChangeColorMode.STANDARD)
    )


def stat_value(expr: str, legend: str = " ") -> list[Builder[Any]]:
    return [query(expr, legend, instant=True)]


def bargauge_panel(title: str, description: str, expr: str, legend: str, *,
                   unit: str = "percentunit", steps: Steps = SATURATION,
                   max_: float | None = 1) -> bargauge.Panel:
    panel = (
        bargauge.Panel().title(title).description(description).datasource(DATASOURCE)
        .targets([query(expr, legend, instant=True)]).unit(unit).min(0)
        .thresholds(thresholds(*steps))
        .color_scheme(color(dashboard.FieldColorModeId.THRESHOLDS))
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT).show_unfilled(True)
        .reduce_options(reduce_last()).min_viz_height(10).min_viz_width(0).max_viz_height(300)
        .value_mode(common.BarGaugeValueMode.COLOR)
        .name_placement(common.BarGaugeNamePlacement.AUTO).sizing(common.BarGaugeSizing.AUTO)
        .legend(common_builders.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
                .placement(common.LegendPlacement.BOTTOM).show_legend(False).calcs([]))
    )
    return panel.max(max_) if max_ is not None else panel


def heatmap_panel(title: str, description: str, metric: str) -> heatmap.Panel:
    """Buckets of a histogram per interval; Grafana reads the `le` boundaries itself."""
    expr = f"sum by (le) (increase({metric}_bucket{sel()}[{RATE}]))"
    return (
        heatmap.Panel().title(title).description(description).datasource(DATASOURCE)
        .targets([query(expr, "{{le}}", fmt=PromQueryFormat.HEATMAP)]).unit("short")
        .calculate(False).cell_gap(1)
        .color(heatmap.HeatmapColorOptions().mode(heatmap_models.HeatmapColorMode.SCHEME)
               .scheme("Oranges").scale(heatmap_models.HeatmapColorScale.EXPONENTIAL)
               .exponent(0.5).steps(64).fill("dark-orange").reverse(False))
        .filter_values(heatmap.FilterValueRange().le(1e-9))
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE))
        .y_axis(heatmap.YAxisConfig().unit("s").reverse(False)
                .axis_placement(common.AxisPlacement.LEFT))
        .show_value(common.VisibilityMode.AUTO)
        .mode(common.TooltipDisplayMode.SINGLE).show_y_histogram().show_color_scale(False)
        .show_legend().exemplars_color("rgba(255,0,255,0.7)")
    )


def table_panel(title: str, description: str, targets: list[Builder[Any]], *,
                hide: tuple[str, ...] = ("Time",), rename: dict[str, str] | None = None,
                units: dict[str, str] | None = None) -> PanelBuilder:
    """An instant-query table; several targets are merged into one row per label set."""
    panel = (
        table.Panel().title(title).description(description).datasource(DATASOURCE)
        .targets(targets).show_header(True).cell_height(common.TableCellHeight.SM)
        .frame_index(0).align(common.FieldTextAlignment.AUTO)
        .cell_options(common.TableAutoCellOptions()).inspect(False)
    )
    if len(targets) > 1:
        panel = panel.with_transformation(dashboard.DataTransformerConfig(id_val="merge",
                                                                          options={}))
    panel = panel.with_transformation(dashboard.DataTransformerConfig(id_val="organize", options={
        "excludeByName": dict.fromkeys(hide, True), "renameByName": rename or {},
        "indexByName": {}}))
    for name, unit in (units or {}).items():
        panel = panel.override_by_name(name, [dashboard.DynamicConfigValue(id_val="unit",
                                                                           value=unit)])
    built = panel.build()
    # The SDK writes the table's old `footer` option on every table; Grafana 12 replaced it
    # (the schema has it no more), and these tables have no footer anyway.
    assert isinstance(built.options, table_models.Options)
    built.options.footer = None
    return _Built(built)


def instant(expr: str, ref: str) -> prometheus.Dataquery:
    return query(expr, ref=ref, instant=True, fmt=PromQueryFormat.TABLE)


# --- layout ----------------------------------------------------------------------------------

class Board:
    """A dashboard being laid out on Grafana's 24-column grid: panels left to right, wrapping
    to a new line; every panel and row numbered in order."""

    WIDTH = 24

    def __init__(self, dash: builders.Dashboard) -> None:
        self.dash = dash
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.line_height = 0
        self.row: builders.Row | None = None  # a collapsed row takes its panels inside

    def add(self, panel: PanelBuilder, w: int, h: int = 8) -> None:
        if self.x + w > self.WIDTH:
            self.newline()
        built = panel.build()
        built.id_val = self._id()
        built.grid_pos = dashboard.GridPos(h=h, w=w, x=self.x, y=self.y)
        self.x += w
        self.line_height = max(self.line_height, h)
        if self.row is not None:
            self.row.with_panel(_Built(built))
        else:
            self.dash.with_panel(_Built(built))

    def newline(self) -> None:
        self.y += self.line_height
        self.x = 0
        self.line_height = 0

    def add_row(self, title: str, *, repeat: str | None = None, collapsed: bool = False) -> None:
        self.end_row()
        self.newline()
        row = (builders.Row(title).id(self._id()).collapsed(collapsed)
               .grid_pos(dashboard.GridPos(h=1, w=self.WIDTH, x=0, y=self.y)))
        if repeat:
            row = row.repeat(repeat)
        self.y += 1
        if collapsed:
            self.row = row
        else:
            self.dash.with_row(row)

    def end_row(self) -> None:
        if self.row is not None:
            self.dash.with_row(self.row)
            self.row = None

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


# --- variables and annotations ---------------------------------------------------------------

def query_var(name: str, label: str, expr: str) -> builders.QueryVariable:
    """A label_values() variable, `All` by default; `All` selects everything with `.*`."""
    return (
        builders.QueryVariable(name).label(label).datasource(DATASOURCE).query(expr)
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC).regex("").multi(True)
        .include_all(True).all_value(".*")
        .current(dashboard.VariableOption(text=["All"], value=["$__all"], selected=True))
    )


def variables(*, servers: bool = False) -> list[Builder[dashboard.VariableModel]]:
    """datasource, job, instance, role, pool (each narrows the next), then server and port
    where the dashboard has per-server rows, then top k."""
    selector = ['job=~"$job"']
    found: list[Builder[dashboard.VariableModel]] = [
        builders.DatasourceVariable("datasource").label("Data source").type("prometheus")
        .regex(""),
    ]
    for name, label, source in (("job", "Job", "job"), ("instance", "Instance", "instance"),
                                ("role", "Role", ROLE), ("pool", "Pool", POOL)):
        match = "{" + ", ".join(selector) + "}" if name != "job" else ""
        found.append(query_var(name, label,
                               f"label_values(db_client_connection_count{match}, {source})"))
        if name != "job":
            selector.append(f'{source}=~"${name}"')
    if servers:
        info = "poolwatch_pool_info{" + ", ".join(selector) + "}"
        found += [
            query_var("server", "Server", f"label_values({info}, server_address)"),
            query_var("port", "Port", "label_values(poolwatch_pool_info{"
                      + ", ".join([*selector, 'server_address=~"$server"']) + "}, server_port)"),
        ]
    values = ["5", "10", "20", "50"]
    found.append(
        builders.CustomVariable("topk").label("Top k").values(",".join(values))
        .current(dashboard.VariableOption(text="10", value="10", selected=True))
        .options([dashboard.VariableOption(text=v, value=v, selected=v == "10") for v in values])
        .multi(False).include_all(False))
    return found


class _Variable(Builder[dashboard.VariableModel]):
    """A variable without the interval settings (`auto`, `auto_min`, `auto_count`) the SDK
    writes on every kind of variable: the schema allows them on none (and Grafana reads them
    only on interval variables, which poolwatch's dashboards do not have)."""

    def __init__(self, variable: Builder[dashboard.VariableModel]) -> None:
        self.variable = variable

    def build(self) -> dashboard.VariableModel:
        built = self.variable.build()
        built.auto = built.auto_min = built.auto_count = None
        return built


class PrometheusAnnotation(dashboard.AnnotationQuery):
    """An annotation from a Prometheus query, saved the way Grafana's Prometheus data source
    keeps it: the query in `target` (Grafana itself moves a top-level `expr`/`step` there when
    it loads one), the title, text and tags formats beside it, where that data source reads them.
    The SDK's AnnotationQuery types `target` as the built-in Grafana annotation's filter and
    has no formats, hence this subclass."""

    def __init__(self, name: str, expr: str, *, title: str, text: str, tags: str) -> None:
        super().__init__(name=name, datasource=DATASOURCE, enable=True, hide=False,
                         icon_color="red")
        self.query = {"refId": "Anno", "expr": expr, "interval": "30s"}
        self.formats = {"titleFormat": title, "textFormat": text, "tagKeys": tags}

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), "target": self.query, **self.formats}


class _Annotation(Builder[dashboard.AnnotationQuery]):
    def __init__(self, annotation: dashboard.AnnotationQuery) -> None:
        self.annotation = annotation

    def build(self) -> dashboard.AnnotationQuery:
        return self.annotation


def alert_annotations() -> list[Builder[dashboard.AnnotationQuery]]:
    """Grafana's own annotations, and when a poolwatch alert fired for the selected pools."""
    expr = (f'ALERTS{{alertstate="firing", job=~"$job", instance=~"$instance", '
            f'{ROLE}=~"$role", {POOL}=~"$pool"}}')
    return [
        builders.AnnotationQuery().name("Annotations & Alerts").built_in(1)
        .datasource(common.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .enable(True).hide(True).icon_color("rgba(0, 211, 255, 1)").type("dashboard"),
        _Annotation(PrometheusAnnotation(
            "poolwatch alerts", expr, title="{{alertname}}",
            text="{{instance}} {{" + POOL + "}} {{" + ROLE + "}}", tags="severity")),
    ]


def new_dashboard(uid: str, title: str, description: str, *,
                  servers: bool = False) -> builders.Dashboard:
    dash = (
        builders.Dashboard(title).uid(uid).description(description)
        .tags(["poolwatch", "database", "sqlalchemy"]).timezone("browser").editable()
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR).version(1).refresh("30s")
        .time("now-1h", "now").fiscal_year_start_month(0).live_now(False).week_start("")
        .link(builders.DashboardLink("poolwatch").type(dashboard.DashboardLinkType.DASHBOARDS)
              .tags(["poolwatch"]).as_dropdown(False).include_vars(True).keep_time(True)
              .target_blank(False).icon("external link").tooltip("").url(""))
        .annotations(alert_annotations())
    )
    return dash.variables([_Variable(v) for v in variables(servers=servers)])


# --- Pool overview ---------------------------------------------------------------------------

def pool_connection_panels(b: Board) -> None:
    b.add(limit_line(timeseries_panel(
        "Connections used / idle vs max",
        "Connections the pool holds, stacked by state, against the most it may open "
        "(summed over the selected instances).",
        queries(
            (f"sum({used()})", "used"),
            (f"sum(db_client_connection_count{sel(IDLE)})", "idle"),
            (f"sum(db_client_connection_max{sel()})", "max"),
        ), stack=True), "^max$"), 12)
    b.add(timeseries_panel(
        "Saturation",
        "Connections in use as a share of the pool's maximum, per instance. "
        "DBPoolSaturationHigh fires above 80% sustained; 100% is a full pool.",
        queries((f"sum by (job, instance) ({used()}) / "
                 f"sum by (job, instance) (db_client_connection_max{sel()})", "{{instance}}")),
        unit="percentunit", max_=1, steps=SATURATION), 6)
    b.add(timeseries_panel(
        "Waiting callers",
        "Callers waiting for a connection right now, per instance. Above zero with the pool "
        "full is exhaustion (DBPoolExhausted).",
        queries((f"sum by (job, instance) (db_client_connection_pending_requests{sel()})",
                 "{{instance}}")), steps=((None, "green"), (1, "red"))), 6)


def pool_wait_panels(b: Board) -> None:
    wait = "db_client_connection_wait_time_seconds"
    b.add(timeseries_panel(
        "Wait time p50 / p95 / p99",
        "Time from asking the pool for a connection to getting one (or timing out). "
        "DBPoolWaitTimeHigh fires when p95 stays above 100 ms.",
        queries(*[(quantile(q, wait), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)]),
        unit="s", steps=((None, "green"), (0.1, "orange"))), 6)
    b.add(heatmap_panel("Wait time distribution", "Checkouts per wait-time bucket.", wait), 6)
    b.add(timeseries_panel(
        "Longest current wait",
        "How long the longest-waiting caller has waited so far, per instance. Unlike the "
        "histogram, it grows while callers are still stuck.",
        queries((f"max by (job, instance) (poolwatch_connection_wait_longest_seconds{sel()})",
                 "{{instance}}")), unit="s", steps=((None, "green"), (0.1, "orange"))), 6)
    b.add(timeseries_panel(
        "Checkout timeouts /s",
        "Checkouts that gave up after pool_timeout (each is a failed request).",
        queries((f"sum by (job, instance) (rate(db_client_connection_timeouts_total{sel()}"
                 f"[{RATE}]))", "{{instance}}")), unit="ops",
        steps=((None, "green"), (0.001, "red"))), 6)


def pool_lifecycle_panels(b: Board) -> None:
    b.add(timeseries_panel(
        "Hold time p95",
        "How long callers keep a connection, checkout to checkin, per instance.",
        queries((quantile(0.95, "db_client_connection_use_time_seconds", "job, instance"),
                 "{{instance}}")), unit="s"), 6)
    b.add(timeseries_panel(
        "Connections created /s",
        "New DBAPI connections opened, next to checkouts. Creations close to checkouts mean "
        "no reuse (DBConnectionChurnHigh).",
        queries(
            (f"sum(rate(db_client_connection_create_time_seconds_count{sel()}[{RATE}]))",
             "created"),
            (f"sum(rate(db_client_connection_wait_time_seconds_count{sel()}[{RATE}]))",
             "checkouts"),
        ), unit="ops"), 6)
    b.add(timeseries_panel(
        "Leaked connections",
        "Connections held past the leak threshold right now, per instance (DBConnectionLeak). "
        "Leaks seen per minute are on the next panel.",
        queries((f"sum by (job, instance) (poolwatch_connections_leaked{sel()})",
                 "{{instance}}")), steps=((None, "green"), (1, "orange"))), 6)
    b.add(timeseries_panel(
        "Leaks seen /min",
        "Connections found held past the leak threshold, per minute and instance.",
        queries((f"sum by (job, instance) (rate(poolwatch_connection_leaks_total{sel()}"
                 f"[{RATE}])) * 60", "{{instance}}")), unit="opm"), 6)
    b.add(timeseries_panel(
        "Invalidations /s",
        "Connections discarded, by kind (hard, soft, pre_ping) and reason.",
        queries((f"sum by (kind, reason) (rate(poolwatch_connection_invalidations_total{sel()}"
                 f"[{RATE}]))", "{{kind}} {{reason}}")), unit="ops"), 6)
    b.add(timeseries_panel(
        "Connection errors /s",
        "Failed attempts to open a database connection, by error type "
        "(too_many_connections: the server is full).",
        queries((f"sum by (error_type) (rate(poolwatch_connection_errors_total{sel()}"
                 f"[{RATE}]))", "{{error_type}}")), unit="ops",
        steps=((None, "green"), (0.001, "red"))), 6)
    b.add(timeseries_panel(
        "Instrumentation errors /s",
        "Errors inside poolwatch itself, by component: should be zero (each was logged, "
        "counted and swallowed; the application was not affected).",
        queries((f"sum by (component) (rate(poolwatch_instrumentation_errors_total{sel()}"
                 f"[{RATE}]))", "{{component}}")), unit="ops",
        steps=((None, "green"), (0.001, "red"))), 6)
    b.add(timeseries_panel(
        "Query summaries folded /s",
        "Statements counted under db_query_summary=\"other\" because the pool reached its cap "
        "of distinct summaries: raise the cap if the statement panels lose queries you need.",
        queries((f"sum(rate(poolwatch_query_summaries_folded_total{sel()}[{RATE}]))",
                 "folded")), unit="ops"), 6)


def pool_statement_panels(b: Board) -> None:
    op = "db_client_operation_duration_seconds"
    b.add(timeseries_panel(
        "Statement latency p95 by summary",
        "95th percentile statement duration for the $topk slowest query summaries.",
        queries((f"topk($topk, {quantile(0.95, op, 'db_query_summary')})",
                 "{{db_query_summary}}")), unit="s"), 12)
    b.add(timeseries_panel(
        "Statement errors /s",
        "Failed statements by query summary and error type.",
        queries((f"sum by (db_query_summary, error_type) (rate({op}_count"
                 f"{sel(FAILED)}[{RATE}]))", "{{db_query_summary}} {{error_type}}")),
        unit="ops"), 12)


def pool_config_panel(b: Board) -> None:
    info_labels = "pool_class, pool_size, max_overflow, timeout, recycle, pre_ping"
    b.add(table_panel(
        "Pool configuration",
        "The pool's settings as reported by poolwatch_pool_info, per instance.",
        [instant(f"max by (job, instance, {ROLE}, {info_labels}) (poolwatch_pool_info{sel()})",
                 "A")],
        hide=("Time", "Value")), 24, 6)


def pool_overview() -> builders.Dashboard:
    dash = new_dashboard(
        "poolwatch-pool-overview", "poolwatch / Pool overview",
        "One row per connection pool: connections, waits, timeouts, churn, leaks and "
        "statements, from poolwatch's metrics.")
    b = Board(dash)
    b.add_row("Pool $pool", repeat="pool")
    pool_connection_panels(b)
    pool_wait_panels(b)
    pool_lifecycle_panels(b)
    pool_statement_panels(b)
    pool_config_panel(b)
    b.end_row()
    return dash


# --- Fleet -----------------------------------------------------------------------------------

def fleet_stats(b: Board) -> None:
    # Counted from db_client_connection_count: unbounded pools (NullPool) have no _max series.
    b.add(stat_panel("Instances", "Instances exporting poolwatch metrics.", stat_value(
        f"count(count by (job, instance) (db_client_connection_count{sel()}))")), 4, 4)
    b.add(stat_panel("Pools", "Pools across all selected instances.", stat_value(
        f"count(count by (job, instance, {POOL}) (db_client_connection_count{sel()}))")), 4, 4)
    b.add(stat_panel(
        "Sum of pools' maxima",
        "The most connections the selected pools may open together, by role: a primary's and "
        "its replicas' are different budgets. Per database server, against its limit: the "
        "Server rows below.",
        stat_value(f"sum by ({ROLE}) (db_client_connection_max{sel()})", "{{role}}")), 4, 4)
    b.add(stat_panel(
        "Connections open", "Connections open now (used + idle), by role.",
        stat_value(f"sum by ({ROLE}) (db_client_connection_count{sel()})", "{{role}}")), 4, 4)
    b.add(stat_panel(
        "Callers waiting", "Callers waiting for a connection right now, fleet-wide.",
        stat_value(f"sum(db_client_connection_pending_requests{sel()})"),
        steps=((None, "green"), (1, "red"))), 4, 4)
    b.add(stat_panel(
        "Saturated pools", "Pools using 80% or more of their maximum now.",
        stat_value(f"count(({saturation_by_pool()}) >= 0.8) or vector(0)"),
        steps=((None, "green"), (1, "red"))), 4, 4)


def fleet_tables(b: Board) -> None:
    legend = "{{instance}} {{" + POOL + "}} {{" + ROLE + "}}"
    b.add(bargauge_panel(
        "Saturation by instance and pool",
        "Share of each pool's maximum in use now, most saturated first: orange from 80% "
        "(DBPoolSaturationHigh), red at 100%.",
        f"sort_desc({saturation_by_pool()})", legend), 12, 10)
    b.add(table_panel(
        "Pools by instance",
        "Every pool of every selected instance, now (timeouts over the last 5 minutes).",
        [
            instant(f"sum by ({KEY}) ({used()})", "A"),
            instant(f"sum by ({KEY}) (db_client_connection_count{sel(IDLE)})", "B"),
            instant(f"max by ({KEY}) (db_client_connection_max{sel()})", "C"),
            instant(f"max by ({KEY}) (db_client_connection_pending_requests{sel()})", "D"),
            instant(f"sum by ({KEY}) (increase(db_client_connection_timeouts_total{sel()}[5m]))",
                    "E"),
            instant(saturation_by_pool(), "F"),
        ],
        rename={"Value #A": "used", "Value #B": "idle", "Value #C": "max",
                "Value #D": "waiting", "Value #E": "timeouts (5m)", "Value #F": "saturation",
                POOL: "pool"},
        units={"saturation": "percentunit"}), 12, 10)


def fleet_timeseries(b: Board) -> None:
    b.add(limit_line(timeseries_panel(
        "Connections in use vs sum of maxima",
        "Connections by state and role, against the sum of the pools' maxima of each role.",
        queries(
            (f"sum by ({ROLE}) ({used()})", "used {{role}}"),
            (f"sum by ({ROLE}) (db_client_connection_count{sel(IDLE)})", "idle {{role}}"),
            (f"sum by ({ROLE}) (db_client_connection_max{sel()})", "sum of maxima {{role}}"),
        ), stack=True), "^sum of maxima"), 12)
    legend = "{{instance}} {{" + POOL + "}}"
    b.add(timeseries_panel(
        "Most saturated pools",
        "The $topk most saturated pools over time.",
        queries((f"topk($topk, {saturation_by_pool()})", legend)),
        unit="percentunit", max_=1, steps=SATURATION), 12)
    by = f"job, instance, {POOL}"
    b.add(timeseries_panel(
        "Checkout timeouts /s by instance", "Timed-out checkouts per instance and pool.",
        queries((f"sum by ({by}) (rate(db_client_connection_timeouts_total{sel()}[{RATE}]))",
                 legend)), unit="ops", steps=((None, "green"), (0.001, "red"))), 8)
    b.add(timeseries_panel(
        "Wait time p95 by instance",
        "95th percentile wait for a connection per instance and pool.",
        queries((quantile(0.95, "db_client_connection_wait_time_seconds", by), legend)),
        unit="s", steps=((None, "green"), (0.1, "orange"))), 8)
    b.add(timeseries_panel(
        "Connections created /s by instance",
        "New connections opened per instance and pool; a fleet-wide rise is a connection storm.",
        queries((f"sum by ({by}) (rate(db_client_connection_create_time_seconds_count{sel()}"
                 f"[{RATE}]))", legend)), unit="ops"), 8)


BUDGET = ((None, "green"), (0.8, "orange"), (1.0, "red"))  # DBConnectionBudgetExceeded above 1
NEAR_LIMIT = ((None, "green"), (0.8, "orange"), (0.9, "red"))  # DBServerConnectionsNearLimit


def fleet_server_row(b: Board) -> None:
    """Per database server: its limit against the fleet's demand and open connections."""
    b.add_row("Server $server", repeat="server")
    b.add(stat_panel(
        "Server connection limit",
        "Connections the server allows the fleet's pools: the smallest limit a pool reads "
        "(max_connections less the reserved slots, or the role's or database's CONNECTION "
        "LIMIT).", stat_value(server_limit(), "{{server_address}}:{{server_port}}")), 6, 4)
    b.add(stat_panel(
        "Fleet demand / limit",
        "The sum of every instance's pool maxima on this server over its limit. Above 100% "
        "the next burst, scale-out or rolling deploy can exhaust the server "
        "(DBConnectionBudgetExceeded).",
        stat_value(f"{server_demand()} / {server_limit()}",
                   "{{server_address}}:{{server_port}}"),
        unit="percentunit", steps=BUDGET), 6, 4)
    b.add(stat_panel(
        "Open connections / limit",
        "Connections the fleet's pools hold open on this server (used + idle) over its limit "
        "(DBServerConnectionsNearLimit above 90%).",
        stat_value(f"{server_open()} / {server_limit()}", "{{server_address}}:{{server_port}}"),
        unit="percentunit", steps=NEAR_LIMIT), 6, 4)
    b.add(stat_panel(
        "Fleet demand", "The sum of every instance's pool maxima on this server, by role.",
        stat_value(server_demand(ROLE), "{{role}}")), 6, 4)
    b.add(limit_line(timeseries_panel(
        "Demand, open connections and limit",
        "Per server: the fleet's demand (sum of pool maxima), the connections it holds open, "
        "and the server's limit (red, dashed).",
        queries(
            (server_demand(), "demand {{server_address}}:{{server_port}}"),
            (server_open(), "open {{server_address}}:{{server_port}}"),
            (server_limit(), "limit {{server_address}}:{{server_port}}"),
        )), "^limit "), 12)
    b.add(bargauge_panel(
        "Demand by service",
        "Each service's (job's) pool maxima on this server as a share of its limit.",
        share_of_limit(server_demand("job")), "{{job}}", steps=BUDGET), 6)
    b.add(bargauge_panel(
        "More instances that fit, by service",
        "How many more instances of each service the server's limit leaves room for: the "
        "headroom (limit less demand) over one instance's pool maxima, rounded down.",
        instances_that_fit(), "{{job}}", unit="short", max_=None,
        steps=((None, "red"), (1, "orange"), (3, "green"))), 6)
    instance = f"job, instance, {ROLE}"
    b.add(table_panel(
        "Instances on this server",
        "Every instance with a pool on this server: its pools' maxima (demand), the connections "
        "it holds open, and its demand's share of the server's limit.",
        [
            instant(server_demand(instance), "A"),
            instant(server_open(instance), "B"),
            instant(share_of_limit(server_demand(instance)), "C"),
        ],
        rename={"Value #A": "demand", "Value #B": "open", "Value #C": "share of limit",
                "server_address": "server", "server_port": "port"},
        units={"share of limit": "percentunit"}), 24, 8)


# postgres_exporter's own series: selected by application_name (poolwatch's pool name, when
# the application_name setting is on), never by poolwatch's job/instance.
PG_ACTIVITY = "pg_stat_activity_count"


def fleet_postgres_row(b: Board) -> None:
    b.add_row("PostgreSQL's view (postgres_exporter)", collapsed=True)
    as_app = (f'label_replace(sum by ({POOL}) (db_client_connection_count{sel()}), '
              f'"application_name", "$1", "{POOL}", "(.*)")')
    server_side = f'sum by (application_name) ({PG_ACTIVITY}{{application_name=~"$pool"}})'
    b.add(timeseries_panel(
        "Server's connections vs pools', by pool",
        "Connections PostgreSQL reports per application_name (postgres_exporter) next to the "
        "connections poolwatch's pools of that name hold open, summed over instances. Server "
        "above pools: other clients use the name, or connections outlive their pool.",
        queries((server_side, "server {{application_name}}"),
                (f"sum by ({POOL}) (db_client_connection_count{sel()})",
                 "pools {{" + POOL + "}}"))), 12)
    b.add(timeseries_panel(
        "Server's connections by database and state",
        "pg_stat_activity as postgres_exporter counts it, for every client of the server.",
        queries((f'sum by (instance, datname, state) ({PG_ACTIVITY}{{datname=~".+"}})',
                 "{{instance}} {{datname}} {{state}}"))), 12)
    b.add(table_panel(
        "Pools against pg_stat_activity",
        "Per pool name, now: connections poolwatch's pools hold open, connections the server "
        "sees with that application_name, and the difference.",
        [
            instant(f"sum by (application_name) ({as_app})", "A"),
            instant(server_side, "B"),
            instant(f"{server_side} - on (application_name) sum by (application_name) "
                    f"({as_app})", "C"),
        ],
        rename={"application_name": "pool", "Value #A": "pools hold", "Value #B": "server sees",
                "Value #C": "server - pools"}), 24, 6)
    b.end_row()


def fleet() -> builders.Dashboard:
    dash = new_dashboard(
        "poolwatch-fleet", "poolwatch / Fleet",
        "Every instance and pool of a service, and each database server's limit against the "
        "fleet's pools: capacity, saturation, timeouts, churn, and how many more instances fit.",
        servers=True)
    b = Board(dash)
    fleet_stats(b)
    b.newline()
    fleet_tables(b)
    b.newline()
    fleet_timeseries(b)
    fleet_server_row(b)
    fleet_postgres_row(b)
    return dash


# --- output ----------------------------------------------------------------------------------

DASHBOARDS: dict[str, Callable[[], builders.Dashboard]] = {
    "poolwatch-pool-overview.json": pool_overview,
    "poolwatch-fleet.json": fleet,
}


def render(board: builders.Dashboard) -> str:
    return json.dumps(board.build(), cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """File name -> JSON text, for every dashboard."""
    return {name: render(build()) for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
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
