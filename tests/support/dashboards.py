"""Reading poolwatch's dashboards the way Grafana would, for the dashboard and end-to-end tests."""

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
        Query(board["title"], f"annotation: {a['name']}", "annotation", a["expr"])
        for a in board["annotations"]["list"]
        if "expr" in a
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
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr
