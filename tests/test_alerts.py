"""The alert rules: promtool accepts them, their unit tests pass and pin every threshold, and
the contract (names, severities, annotations, runbooks) holds."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.rules import REPO, RULE_TESTS, RULES_FILE, alerts, load_rules
from tests.support.services import prometheus_binary

RUNBOOKS = REPO / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/poolwatch/poolwatch/blob/main/docs/runbooks.md#"

# The public contract: alert name -> severity.
EXPECTED_ALERTS = {
    "DBPoolExhausted": "critical",
    "DBPoolCheckoutTimeouts": "critical",
    "DBPoolSaturationHigh": "warning",
    "DBPoolWaitTimeHigh": "warning",
    "DBConnectionLeak": "warning",
    "DBConnectionChurnHigh": "warning",
}
# Default `for` of each alert, as documented in docs/runbooks.md.
EXPECTED_FOR = {
    "DBPoolExhausted": "2m",
    "DBPoolCheckoutTimeouts": "1m",
    "DBPoolSaturationHigh": "10m",
    "DBPoolWaitTimeHigh": "10m",
    "DBConnectionLeak": "5m",
    "DBConnectionChurnHigh": "15m",
}


def promtool(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([prometheus_binary("promtool"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", RULES_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout
    assert len(load_rules()) == 13


def test_promtool_rule_unit_tests_pass() -> None:
    assert len(RULE_TESTS) >= 7
    result = promtool("test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_alert_names_and_severities_are_the_contract() -> None:
    found = {name: rule["labels"]["severity"] for name, rule in alerts().items()}
    assert found == EXPECTED_ALERTS
    assert {name: rule["for"] for name, rule in alerts().items()} == EXPECTED_FOR


@pytest.mark.parametrize("name", sorted(EXPECTED_ALERTS))
def test_annotations_name_pool_instance_value_and_runbook(name: str) -> None:
    annotations = alerts()[name]["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    description = annotations["description"]
    for needed in ("$labels.db_client_connection_pool_name", "$labels.instance", "$value"):
        assert needed in description, f"{name} description lacks {needed}"
    assert annotations["runbook_url"] == RUNBOOK_BASE + name.lower()


@pytest.mark.parametrize("name", sorted(EXPECTED_ALERTS))
def test_runbook_section_exists_with_the_three_parts(name: str) -> None:
    text = RUNBOOKS.read_text()
    # GitHub's anchor for "## DBPoolExhausted" is "#dbpoolexhausted".
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    section = next((s for s in sections if s.split("\n", 1)[0].strip() == name), None)
    assert section is not None, f"docs/runbooks.md has no '## {name}' section"
    for part in ("**What it means.**", "**How to confirm.**", "**What to do.**"):
        assert part in section, f"runbook section {name} lacks {part}"


@pytest.mark.parametrize("name", sorted(EXPECTED_ALERTS))
def test_runbook_threshold_table_matches_rules(name: str) -> None:
    row = re.search(rf"^\| `{name}` \| (\w+) \| .+ \| (\w+) \|$", RUNBOOKS.read_text(),
                    flags=re.MULTILINE)
    assert row, f"no threshold table row for {name} in docs/runbooks.md"
    assert (row.group(1), row.group(2)) == (EXPECTED_ALERTS[name], EXPECTED_FOR[name])


def test_rules_never_aggregate_away_job_instance_pool_or_user_labels() -> None:
    # `sum by (...)` would drop labels the rules cannot know (role, ...); only `without` is used.
    for rule in load_rules():
        assert not re.search(r"\bby\s*\(", rule["expr"]), rule["expr"]
        assert not re.search(r"\bon\s*\(|\bignoring\s*\(", rule["expr"]), rule["expr"]


def test_counters_are_only_read_through_rate_or_increase() -> None:
    # A raw counter, delta() or `x - x offset` misreads a restarted instance's counter reset.
    counter = re.compile(r"(\w+)?\(?\s*(\w+(?:_total|_bucket|_seconds_count))\b")
    for rule in load_rules():
        for m in counter.finditer(rule["expr"]):
            assert m.group(1) in ("rate", "increase"), f"{m.group(2)} read raw in {rule['expr']}"


def eval_seconds(t: str) -> int:
    """promtool eval_time such as 45s, 2m or 1m45s, in seconds."""
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", t)
    assert m and t, f"unexpected eval_time {t}"
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def test_every_alert_has_positive_negative_and_for_boundary_tests() -> None:
    positive: dict[str, set[int]] = {n: set() for n in EXPECTED_ALERTS}
    negative: dict[str, set[int]] = {n: set() for n in EXPECTED_ALERTS}
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                kind = positive if case["exp_alerts"] else negative
                kind[case["alertname"]].add(eval_seconds(case["eval_time"]))
    for name in EXPECTED_ALERTS:
        assert positive[name], f"no test where {name} fires"
        assert negative[name], f"no test where {name} stays silent"
        # A `for` boundary: silent one evaluation (15s) before a time where it fires.
        assert any(t - 15 in negative[name] for t in positive[name]), \
            f"{name}: no `for` boundary test"


# --- the unit tests must be able to fail ------------------------------------------------------

def _mutated_suite_fails(tmp_path: Path, rules_text: str) -> bool:
    """Run every rule test against `rules_text` instead of the shipped file."""
    (tmp_path / "poolwatch.rules.yml").write_text(rules_text)
    tests_dir = tmp_path / "tests"
    tests_dir.mkdir(exist_ok=True)
    for path in RULE_TESTS:
        (tests_dir / path.name).write_text(path.read_text())
    return promtool("test", "rules", *sorted(tests_dir.glob("*.yml"))).returncode != 0


THRESHOLD_LINE = re.compile(r"^(.*[<>]=?\s*)([\d.]+)(\s*# threshold)$", re.MULTILINE)
FOR_LINE = re.compile(r"^(\s*for:\s*)(\d+)m(\s*# threshold)$", re.MULTILINE)


def _alert_at(text: str, offset: int) -> str:
    return re.findall(r"- alert: (\w+)", text[:offset])[-1]


def _mutations() -> list[tuple[str, str]]:
    """(description, mutated rule text): each threshold raised 100-fold (0 -> 1), each `for`
    halved and doubled. The shipped tests must catch every one of them."""
    text = RULES_FILE.read_text()
    found = []
    for m in THRESHOLD_LINE.finditer(text):
        value = float(m.group(2))
        new = value * 100 if value else 1
        found.append((f"{_alert_at(text, m.start())} {m.group(2)} -> {new:g}",
                      text[:m.start(2)] + f"{new:g}" + text[m.end(2):]))
    for m in FOR_LINE.finditer(text):
        minutes = int(m.group(2))
        for new in (f"{minutes * 30}s", f"{minutes * 2}m"):
            # m.end(2) + 1 skips the "m" unit of the original value.
            found.append((f"{_alert_at(text, m.start())} for {minutes}m -> {new}",
                          text[:m.start(2)] + new + text[m.end(2) + 1:]))
    return found


def test_mutations_cover_every_threshold_and_for() -> None:
    mutations = _mutations()
    # 7 comparison thresholds (churn has two) and one `for` per alert, halved and doubled.
    assert len(mutations) == 7 + 2 * len(EXPECTED_ALERTS)


@pytest.mark.parametrize(("description", "text"),
                         [pytest.param(d, t, id=d) for d, t in _mutations()])
def test_rule_tests_catch_a_changed_threshold(tmp_path: Path, description: str, text: str) -> None:
    load_rules(text)  # still a valid rule file
    assert _mutated_suite_fails(tmp_path, text), f"rule tests still pass after {description}"
