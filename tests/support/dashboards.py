"""Reading poolwatch's dashboards the way Grafana would, for the dashboard and end-to-end tests,
and checking them against Grafana's published dashboard schema (vendored in grafana_schema/)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO / "dashboards"

# What Grafana substitutes into queries that are not dashboard variables.
BUILTIN_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


@dataclass(frozen=True)
class Query:
    dashboard: str
    where: str  # panel title, or "annotation: <name>"
    ref: str
    expr: str


def load_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> parsed dashboard, for every committed dashboard."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(board: Mapping[str, Any]) -> list[Query]:
    """Every PromQL expression a dashboard runs: panel targets and annotations."""
    found = [
        Query(board["title"], panel["title"], target["refId"], target["expr"])
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]
    found += [
        Query(board["title"], f"annotation: {a['name']}", "annotation", a["target"]["expr"])
        for a in board["annotations"]["list"]
        if "expr" in a.get("target", {})
    ]
    return found


def variables(board: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board["templating"]["list"]}


def variable_query(var: Mapping[str, Any]) -> str:
    query = var["query"]
    return str(query["query"] if isinstance(query, dict) else query)


LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def parse_label_values(query: str) -> tuple[str | None, str]:
    """`label_values(selector, label)` -> (selector or None, label)."""
    m = LABEL_VALUES.match(query.strip())
    assert m, f"not a label_values() query: {query}"
    return m.group("selector"), m.group("label")


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace $name and ${name} as Grafana does; fail on any variable left over."""
    merged = {**BUILTIN_VARIABLES, **values}
    for name in sorted(merged, key=len, reverse=True):  # $instance before $in...
        expr = expr.replace("${" + name + "}", merged[name]).replace("$" + name, merged[name])
    # `$1` and the like are label_replace() references, which Grafana leaves alone too.
    assert not re.search(r"\$\{?[A-Za-z_]", expr), f"unsubstituted variable in {expr}"
    return expr



SCHEMA_FILE = Path(__file__).resolve().parent / "grafana_schema" / "dashboard-schema.json"
# The schema models only Grafana's built-in annotation (its AnnotationQuery says of `target`:
# "this should just be a normal query target"). Grafana's Prometheus data source keeps its
# query in `target` and reads these formats beside it (packages/grafana-prometheus,
# annotations.ts: prepareAnnotation moves a top-level expr/step into target; processEvents
# reads titleFormat, textFormat, tagKeys, useValueForTime from the annotation itself).
PROMETHEUS_ANNOTATION_FORMATS = {"titleFormat", "textFormat", "tagKeys", "useValueForTime"}
PROMETHEUS_ANNOTATION_TARGET = {"refId", "expr", "interval"}


def schema_errors(board: Mapping[str, Any]) -> list[str]:
    """Where a dashboard breaks Grafana's published schema: the dashboard model, then each
    panel's options and fieldConfig.defaults.custom against its plugin's own schema. A
    Prometheus annotation is checked as the schema's AnnotationQuery plus its query and formats."""
    from jsonschema import Draft7Validator

    schema = json.loads(SCHEMA_FILE.read_text())
    found: list[str] = []
    annotations = []
    for i, annotation in enumerate(board["annotations"]["list"]):
        if annotation.get("datasource", {}).get("type") == "prometheus":
            annotation = dict(annotation)
            target = annotation.pop("target", None)
            if not (isinstance(target, dict) and set(target) == PROMETHEUS_ANNOTATION_TARGET
                    and all(isinstance(v, str) for v in target.values())):
                found.append(f"annotations/list/{i}/target: not a Prometheus query: {target}")
            for key in PROMETHEUS_ANNOTATION_FORMATS & set(annotation):
                if not isinstance(annotation.pop(key), str | bool):
                    found.append(f"annotations/list/{i}/{key}: not a string")
        annotations.append(annotation)
    board = {**board, "annotations": {**board["annotations"], "list": annotations}}
    found += [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in Draft7Validator(schema["dashboard"]).iter_errors(board)]
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        plugin = schema["panels"].get(panel["type"])
        if plugin is None:
            found.append(f"{panel['title']}: no schema for panel type {panel['type']}")
            continue
        parts = [("options", plugin["options"], panel.get("options", {}))]
        if "custom" in plugin:
            parts.append(("custom", plugin["custom"],
                          panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})))
        for part, part_schema, value in parts:
            found += [f"{panel['title']} {part}/{'/'.join(map(str, e.absolute_path))}: "
                      f"{e.message}" for e in Draft7Validator(part_schema).iter_errors(value)]
    return found
