"""The Prometheus rules and Grafana dashboards that match this version of poolwatch.

A built package carries them as ``poolwatch/_assets/`` (``setup.py`` copies them from the
repository's ``alerts/`` and ``dashboards/`` at build time); an editable install or a source
checkout reads the repository's own files. ``poolwatch rules`` and ``poolwatch dashboards``
(:mod:`poolwatch.cli`) write them out, with the user's job selector or data source.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

__all__ = [
    "RULES_FILE",
    "dashboard_files",
    "dashboards",
    "rules",
    "with_datasource",
    "with_expression_selector",
    "with_job_selector",
]

RULES_FILE = "poolwatch.rules.yml"
_SOURCE_TREE = Path(__file__).resolve().parents[2]  # exporter/poolwatch/assets.py -> repo


def _directory(kind: str) -> Traversable:
    packaged = resources.files("poolwatch") / "_assets" / kind
    if packaged.is_dir():
        return packaged
    source = _SOURCE_TREE / kind
    if source.is_dir():
        return source
    raise FileNotFoundError(
        f"poolwatch's {kind} are not installed (no poolwatch/_assets/{kind} in the package and"
        f" no {kind}/ beside its source): reinstall poolwatch"
    )


def rules(job_selector: str | None = None) -> str:
    """The alerting and recording rules (YAML), with ``job_selector`` (label matchers such as
    ``job="api"``) added to every series selector of every ``expr``."""
    text = (_directory("alerts") / RULES_FILE).read_text(encoding="utf-8")
    return text if job_selector is None else with_job_selector(text, job_selector)


def dashboard_files() -> list[str]:
    """The dashboards' file names (``poolwatch-*.json``)."""
    return sorted(
        entry.name for entry in _directory("dashboards").iterdir() if entry.name.endswith(".json")
    )


def dashboards(datasource: str | None = None) -> dict[str, str]:
    """Each dashboard's file name → its JSON, with ``datasource`` (a Prometheus data source's
    name or uid in your Grafana) as the default of its data source variable."""
    directory = _directory("dashboards")
    out: dict[str, str] = {}
    for name in dashboard_files():
        text = (directory / name).read_text(encoding="utf-8")
        out[name] = text if datasource is None else with_datasource(text, datasource)
    return out


# --- the job selector --------------------------------------------------------------------------

_MATCHER = r'\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\\n]|\\.)*"\s*'
_MATCHERS = re.compile(rf"^{_MATCHER}(?:,{_MATCHER})*,?\s*$")
_TOKEN = re.compile(
    r"""(?P<comment>\#[^\n]*)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      | (?P<number>\d[\w.]*)
      | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
      | (?P<open>[{(\[])
      | (?P<close>[})\]])
      | (?P<other>\s+|.)""",
    re.VERBOSE | re.DOTALL,
)
# Names after which a parenthesised list holds label names, not expressions.
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
     "topk", "quantile", "limitk", "limit_ratio"}
)  # fmt: skip
_KEYWORDS = (
    _LABEL_LISTS | _AGGREGATIONS | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
)


def _matchers(job_selector: str) -> str:
    selector = job_selector.strip()
    if selector.startswith("{") and selector.endswith("}"):
        selector = selector[1:-1]
    if not _MATCHERS.match(selector):
        raise ValueError(
            f"job_selector: {job_selector!r} is not a list of label matchers; it accepts"
            ' PromQL matchers such as job="api" or job=~"api|worker",env="prod"'
        )
    return ", ".join(part.strip() for part in _split_matchers(selector))


def _split_matchers(selector: str) -> list[str]:
    return [m.group(0) for m in re.finditer(_MATCHER, selector)]


def with_expression_selector(expr: str, matchers: str) -> str:
    """``expr`` (PromQL) with ``matchers`` added to each series selector whose metric name is
    not a recording rule's (those have a ``:`` and come from selected series already)."""
    out: list[str] = []
    tokens = list(_TOKEN.finditer(expr))
    # One entry per open bracket: True where names are not series (inside label matchers, a
    # range or subquery, or a by/without/on/ignoring/group_* label list).
    hidden: list[bool] = []
    after_label_list = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        kind, text = token.lastgroup, token.group(0)
        i += 1
        out.append(text)
        if kind == "open":
            hidden.append(text in "{[" or after_label_list or (bool(hidden) and hidden[-1]))
            after_label_list = False
            continue
        if kind == "close":
            if hidden:
                hidden.pop()
            continue
        if kind != "name" or (hidden and hidden[-1]):
            if kind != "other" or text.strip():
                after_label_list = False
            continue
        after_label_list = text in _LABEL_LISTS
        following = _next_significant(tokens, i)
        if text in _KEYWORDS or ":" in text or (following and following.group(0) == "("):
            continue  # a keyword, a recording rule's series, a function or aggregation
        if following is None or following.group(0) != "{":
            out.append("{" + matchers + "}")
            continue
        # The series has matchers of its own: ours go first inside its braces.
        j = tokens.index(following)
        out.extend(t.group(0) for t in tokens[i : j + 1])
        closing = _next_significant(tokens, j + 1)
        empty = closing is not None and closing.group(0) == "}"
        out.append(matchers if empty else matchers + ", ")
        hidden.append(True)
        i = j + 1
    return "".join(out)


def _next_significant(tokens: list[re.Match[str]], start: int) -> re.Match[str] | None:
    for token in tokens[start:]:
        if token.lastgroup == "other" and not token.group(0).strip():
            continue
        if token.lastgroup == "comment":
            continue
        return token
    return None


_EXPR_LINE = re.compile(r"^(?P<indent>\s*)(?:-\s+)?expr:\s*(?P<value>.*)$")


def with_job_selector(rules_yaml: str, job_selector: str) -> str:
    """The rules file with ``job_selector`` added to every ``expr``: block scalars (``|``)
    are edited in place, so the file keeps its comments; a one-line expression stays a plain
    scalar where YAML reads it the same, else becomes a double-quoted one."""
    matchers = _matchers(job_selector)
    lines = rules_yaml.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _EXPR_LINE.match(line.rstrip("\n"))
        i += 1
        if match is None:
            out.append(line)
            continue
        value = match.group("value")
        if value.startswith(("|", ">")):
            if value.startswith(">"):
                raise ValueError("poolwatch rules: a folded (>) expr is not supported")
            out.append(line)
            own = len(match.group("indent"))
            block_start = i
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > own
            ):
                i += 1
            out.append(with_expression_selector("".join(lines[block_start:i]), matchers))
            continue
        if value.startswith('"'):
            expr = json.loads(value)
        elif value.startswith("'"):
            expr = value[1:-1].replace("''", "'")
        else:
            expr = value
        prefix = line[: match.start("value")]
        out.append(prefix + _yaml_scalar(with_expression_selector(expr, matchers)) + "\n")
    return "".join(out)


def _yaml_scalar(value: str) -> str:
    """``value`` as a plain YAML scalar where that reads the same, else double-quoted (a JSON
    string is a valid one)."""
    plain = value and value[0] not in "{[\"'|>&*!%@`#,?:-" and not re.search(r": | #|\n", value)
    return value if plain else json.dumps(value)


# --- the data source ---------------------------------------------------------------------------


def with_datasource(dashboard_json: str, datasource: str) -> str:
    """The dashboard with ``datasource`` as the selected value of its data source variable."""
    if not datasource.strip():
        raise ValueError("datasource: an empty name; it accepts a Grafana data source name or uid")
    dashboard: dict[str, Any] = json.loads(dashboard_json)
    variables = [
        v for v in dashboard.get("templating", {}).get("list", []) if v.get("type") == "datasource"
    ]
    if not variables:
        raise ValueError(f"dashboard {dashboard.get('title')!r} has no data source variable")
    for variable in variables:
        variable["current"] = {"selected": True, "text": datasource, "value": datasource}
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"
