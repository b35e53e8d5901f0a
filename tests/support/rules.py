"""Reading poolwatch's rule file, and deriving the fast variant the end-to-end test runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES_FILE = REPO / "alerts" / "poolwatch.rules.yml"
RULE_TESTS = sorted((REPO / "alerts" / "tests").glob("*.yml"))

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
# A range selector ([5m]) or a `for:` value: the only durations a rule file has.
_RANGE = re.compile(r"\[(\d+(?:ms|s|m|h|d))\]")
_FOR = re.compile(r"^(\s*for:\s*)(\d+(?:ms|s|m|h|d))", re.MULTILINE)


def load_rules(text: str | None = None) -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES_FILE.read_text() if text is None else text)
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts(text: str | None = None) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in load_rules(text) if "alert" in r}


def seconds(duration: str) -> float:
    m = _DURATION.fullmatch(duration)
    assert m, f"not a single-unit duration: {duration}"
    return int(m.group(1)) * _UNITS[m.group(2)]


def scale_durations(text: str, factor: float, minimum: float = 3) -> str:
    """The same rules with every range window and `for` multiplied by `factor` (seconds,
    at least `minimum`). Nothing else changes, so the logic under test is the shipped logic."""

    def scaled(duration: str) -> str:
        return f"{int(max(minimum, round(seconds(duration) * factor)))}s"

    text = _RANGE.sub(lambda m: f"[{scaled(m.group(1))}]", text)
    return _FOR.sub(lambda m: m.group(1) + scaled(m.group(2)), text)
