"""The alert rules: promtool accepts them, their unit tests pass and pin every threshold, no
alert can start for a target that is down or gone, and the contract (names, severities,
annotations, runbooks) holds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml

from tests.support.promql import poll, query, server_values
from tests.support.rules import REPO, RULE_TESTS, RULES_FILE, alerts, load_rules, scale_durations
from tests.support.services import (
    free_port,
    prometheus,
    prometheus_binary,
    wait_for_port,
)

RUNBOOKS = REPO / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/poolwatch/poolwatch/blob/main/docs/runbooks.md#"
FLEET_GENERATOR = REPO / "alerts" / "tests" / "generate_fleet.py"
FLEET_TESTS = REPO / "alerts" / "tests" / "fleet.test.yml"
LIVE = "pool:poolwatch_pool:live"

# The public contract: alert name -> severity.
EXPECTED_ALERTS = {
    "DBPoolExhausted": "critical",
    "DBPoolCheckoutTimeouts": "critical",
    "DBPoolSaturationHigh": "warning",
    "DBPoolWaitTimeHigh": "warning",
    "DBConnectionLeak": "warning",
    "DBConnectionChurnHigh": "warning",
    "DBServerFull": "critical",
    "DBServerUnreachable": "critical",
    "DBConnectionRejected": "critical",
    "DBConnectionBudgetExceeded": "warning",
    "DBServerConnectionsNearLimit": "critical",
}
# Default `for` of each alert, as documented in docs/runbooks.md ("none": fires at once).
EXPECTED_FOR = {
    "DBPoolExhausted": "2m",
    "DBPoolCheckoutTimeouts": "1m",
    "DBPoolSaturationHigh": "10m",
    "DBPoolWaitTimeHigh": "10m",
    "DBConnectionLeak": "5m",
    "DBConnectionChurnHigh": "15m",
    "DBServerFull": "none",
    "DBServerUnreachable": "3m",
    "DBConnectionRejected": "1m",
    "DBConnectionBudgetExceeded": "10m",
    "DBServerConnectionsNearLimit": "5m",
}
# Raised per server (server_address, server_port) rather than per job, instance and pool.
SERVER_ALERTS = {"DBConnectionBudgetExceeded", "DBServerConnectionsNearLimit"}
POOL_ALERTS = set(EXPECTED_ALERTS) - SERVER_ALERTS
# Each runbook section ends with the `poolwatch doctor` line that confirms it, naming the finding
# kinds (issue #18's vocabulary) it expects.
DOCTOR_KINDS = {"undersized", "oversized", "held_outside_queries", "slow_queries", "leak",
                "churn", "server_full", "budget_exceeded", "healthy"}


def promtool(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([prometheus_binary("promtool"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", RULES_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout
    assert len(load_rules()) == 27


def test_promtool_rule_unit_tests_pass() -> None:
    assert len(RULE_TESTS) >= 10
    result = promtool("test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_alert_names_and_severities_are_the_contract() -> None:
    found = {name: rule["labels"]["severity"] for name, rule in alerts().items()}
    assert found == EXPECTED_ALERTS
    assert {name: rule.get("for", "none") for name, rule in alerts().items()} == EXPECTED_FOR


@pytest.mark.parametrize("name", sorted(EXPECTED_ALERTS))
def test_annotations_name_pool_or_server_role_value_and_runbook(name: str) -> None:
    annotations = alerts()[name]["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    description = annotations["description"]
    # The user's role label, where the series have one (issue #17).
    where = (("$labels.server_address", "$labels.server_port",
              "{{ with $labels.role }} (role {{ . }}){{ end }}") if name in SERVER_ALERTS else
             ("$labels.db_client_connection_pool_name", "$labels.instance",
              "(job {{ $labels.job }}{{ with $labels.role }}, role {{ . }}{{ end }})"))
    for needed in (*where, "$value"):
        assert needed in description, f"{name} description lacks {needed}"
    assert annotations["runbook_url"] == RUNBOOK_BASE + name.lower()


def runbook_section(name: str) -> str:
    # GitHub's anchor for "## DBPoolExhausted" is "#dbpoolexhausted".
    sections = re.split(r"^## ", RUNBOOKS.read_text(), flags=re.MULTILINE)
    section = next((s for s in sections if s.split("\n", 1)[0].strip() == name), None)
    assert section is not None, f"docs/runbooks.md has no '## {name}' section"
    return section


@pytest.mark.parametrize("name", sorted(EXPECTED_ALERTS))
def test_runbook_section_exists_with_the_three_parts(name: str) -> None:
    section = runbook_section(name)
    for part in ("**What it means.**", "**How to confirm.**", "**What to do.**"):
        assert part in section, f"runbook section {name} lacks {part}"


@pytest.mark.parametrize("name", sorted(EXPECTED_ALERTS))
def test_runbook_section_ends_with_the_doctor_line_that_confirms_it(name: str) -> None:
    last = [line for line in runbook_section(name).strip().split("\n") if line.strip()][-1]
    m = re.fullmatch(r"`poolwatch doctor --prometheus URL --selector '(\{.+\})'( --window \w+)?`"
                     r" (?:expects|reports) (.+)\.", last)
    assert m, f"{name}: the section's last line is not the doctor line: {last!r}"
    kinds = set(re.findall(r"`(\w+)`", m.group(3)))
    assert kinds and kinds <= DOCTOR_KINDS, (name, kinds)


@pytest.mark.parametrize("name", sorted(SERVER_ALERTS))
def test_runbook_says_how_many_instances_fit_with_the_tested_query(name: str) -> None:
    # The query is the one fleet.test.yml checks against exact values (scenario B).
    fit = subprocess.run([sys.executable, "-c", "import generate_fleet as g; print(g.FIT)"],
                         cwd=FLEET_GENERATOR.parent, capture_output=True, text=True,
                         check=True).stdout.strip()
    section = runbook_section(name)
    assert "**How many instances fit.**" in section
    assert fit in " ".join(section.split()), f"{name}: the runbook's query is not the tested one"


@pytest.mark.parametrize("name", sorted(EXPECTED_ALERTS))
def test_runbook_threshold_table_matches_rules(name: str) -> None:
    row = re.search(rf"^\| `{name}` \| (\w+) \| .+ \| (\w+) \|$", RUNBOOKS.read_text(),
                    flags=re.MULTILINE)
    assert row, f"no threshold table row for {name} in docs/runbooks.md"
    assert (row.group(1), row.group(2)) == (EXPECTED_ALERTS[name], EXPECTED_FOR[name])


def _clauses(expr: str, keyword: str) -> list[frozenset[str]]:
    return [frozenset(x.strip() for x in m.group(1).split(","))
            for m in re.finditer(rf"\b{keyword}\s*\(([^)]*)\)", expr)]


SERVER = frozenset({"server_address", "server_port"})
POOL_KEY = frozenset({"job", "instance", "db_client_connection_pool_name"})


def test_rules_never_aggregate_away_job_instance_pool_or_user_labels() -> None:
    # `sum by (...)` would drop labels the rules cannot know (role, ...): per-pool rules and
    # alerts use only `without`. The per-server rules are the one place that adds up instances,
    # by (server_address, server_port); the role is joined back onto their alerts.
    allowed_by = {SERVER, SERVER | {"role"}, POOL_KEY | SERVER | {"role"}}
    for rule in load_rules():
        name = rule.get("record") or rule["alert"]
        per_server = name.startswith(("poolwatch:", "pool:poolwatch_server:")) or (
            name in SERVER_ALERTS)
        by = _clauses(rule["expr"], "by")
        if per_server:
            assert set(by) <= allowed_by and (by or "alert" in rule), (name, by)
        else:
            assert not by, (name, by)
        # Joins: a pool by its key, a target by (job, instance), a server by its address.
        assert set(_clauses(rule["expr"], "on")) <= {POOL_KEY, frozenset({"job", "instance"}),
                                                       SERVER}, name
        assert set(_clauses(rule["expr"], "ignoring")) <= {
            frozenset({"db_client_connection_state"}), frozenset({"error_type"})}, name


def test_every_alert_is_joined_with_liveness() -> None:
    """The mechanism of issue #13 item 11: a per-pool alert holds only for pools exported now by a
    target that is not down; the per-server alerts read only per-server series, which count only
    such pools (through pool:poolwatch_server:info)."""
    rules = {r.get("record") or r["alert"]: r for r in load_rules()}
    live = rules[LIVE]["expr"]
    assert "db_client_connection_count" in live and "unless on (job, instance) (up == 0)" in live
    assert LIVE in rules["pool:poolwatch_server:info"]["expr"]
    for name in POOL_ALERTS:
        last = rules[name]["expr"].strip().split("\n")[-1].strip()
        assert re.fullmatch(rf"(and (ignoring \(error_type\) )?)?{LIVE}", last), (name, last)
    for name, rule in rules.items():
        if name.startswith("instance:"):
            assert "group_left (server_address, server_port)\n" in rule["expr"], name
            assert rule["expr"].rstrip().endswith("pool:poolwatch_server:info\n)"), name
    for name in SERVER_ALERTS:
        series = set(re.findall(r"[a-z_]+:[a-z_]+:[a-z_]+", rules[name]["expr"]))
        assert series and all(s.startswith("poolwatch:") for s in series), (name, series)


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
    # (evaluation interval of the file, eval_time) of every case, in seconds.
    positive: dict[str, set[tuple[int, int]]] = {n: set() for n in EXPECTED_ALERTS}
    negative: dict[str, set[tuple[int, int]]] = {n: set() for n in EXPECTED_ALERTS}
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        step = eval_seconds(doc["evaluation_interval"])
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                kind = positive if case["exp_alerts"] else negative
                kind[case["alertname"]].add((step, eval_seconds(case["eval_time"])))
    for name in EXPECTED_ALERTS:
        assert positive[name], f"no test where {name} fires"
        assert negative[name], f"no test where {name} stays silent"
        # A `for` boundary (or, for an alert that fires at once, the first evaluation that sees
        # the cause): silent one evaluation before a time where it fires.
        assert any((step, t - step) in negative[name] for step, t in positive[name]), \
            f"{name}: no `for` boundary test"


def test_fleet_tests_are_generated_from_the_checked_in_script() -> None:
    result = subprocess.run([sys.executable, str(FLEET_GENERATOR), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, "run alerts/tests/generate_fleet.py: fleet.test.yml is stale"


def test_fleet_tests_cover_a_fleet_of_100_instances_3_services_2_servers() -> None:
    groups = yaml.safe_load(FLEET_TESTS.read_text())["tests"]
    assert len(groups) == 4
    for group in groups:
        series = " ".join(s["series"] for s in group["input_series"])
        instances = set(re.findall(r'instance="([^"]+)"', series))
        jobs = set(re.findall(r'job="([^"]+)"', series))
        servers = set(re.findall(r'server_address="([^"]+)"', series))
        assert len(instances) >= 100 and len(jobs) == 3 and len(servers) == 2
        # Each scenario says what both per-server alerts do.
        assert {case["alertname"] for case in group["alert_rule_test"]} == SERVER_ALERTS


def _without(text: str, line: str) -> str:
    assert line in text, line
    return text.replace(line, "")


# name -> (the mechanism taken out, the test files whose cases exercise it)
LIVENESS_REMOVED = {
    # An alert that no longer checks that its pool is live now.
    "alerts not joined with pool:poolwatch_pool:live": (lambda text: re.sub(
        r"\n\s+and\n\s+pool:poolwatch_pool:live|\n\s+and (ignoring \(error_type\) )?"
        r"pool:poolwatch_pool:live", "", text), ("liveness.test.yml", "connection_errors.test.yml")),
    # A target that is down but whose series were not marked stale.
    "liveness ignores up == 0": (lambda text: _without(
        text, "\n          unless on (job, instance) (up == 0)"), ("liveness.test.yml",)),
    # Per-server sums over every pool seen in the last 5 minutes.
    "per-server rules ignore liveness": (lambda text: _without(
        text, "\n            and on (job, instance, db_client_connection_pool_name) "
              "pool:poolwatch_pool:live"), ("fleet.test.yml",)),
}


@pytest.mark.parametrize("mutation", sorted(LIVENESS_REMOVED))
def test_rule_tests_catch_alerts_over_targets_that_are_down_or_gone(
        tmp_path: Path, mutation: str) -> None:
    mutate, files = LIVENESS_REMOVED[mutation]
    text = mutate(RULES_FILE.read_text())
    load_rules(text)
    assert text != RULES_FILE.read_text()
    assert _mutated_suite_fails(tmp_path, text, only=files), f"rule tests still pass with {mutation}"


# --- the unit tests must be able to fail ------------------------------------------------------

def _mutated_suite_fails(tmp_path: Path, rules_text: str, alert: str | None = None,
                         only: tuple[str, ...] = ()) -> bool:
    """Run the rule tests against `rules_text` instead of the shipped file: every test file, the
    files named in `only`, or with `alert` those that state what that alert does (no other file
    can notice a change to that alert's own threshold or `for`; this keeps the slow fleet tests
    out of the rest)."""
    (tmp_path / "poolwatch.rules.yml").write_text(rules_text)
    tests_dir = tmp_path / "tests"
    tests_dir.mkdir(exist_ok=True)
    for path in RULE_TESTS:
        if (f"alertname: {alert}\n" in path.read_text() if alert else
                not only or path.name in only):
            (tests_dir / path.name).write_text(path.read_text())
    files = sorted(tests_dir.glob("*.yml"))
    assert files
    return promtool("test", "rules", *files).returncode != 0


THRESHOLD_LINE = re.compile(r"^(.*[<>]=?\s*)([\d.]+)(\s*# threshold)$", re.MULTILINE)
FOR_LINE = re.compile(r"^(\s*for:\s*)(\d+)m(\s*# threshold)$", re.MULTILINE)


def _alert_at(text: str, offset: int) -> str:
    return re.findall(r"- alert: (\w+)", text[:offset])[-1]


def _mutations() -> list[tuple[str, str, str]]:
    """(description, mutated rule text): each threshold raised 100-fold (0 -> 1), each `for`
    halved and doubled. The shipped tests must catch every one of them."""
    text = RULES_FILE.read_text()
    found = []
    for m in THRESHOLD_LINE.finditer(text):
        value = float(m.group(2))
        new = value * 100 if value else 1
        alert = _alert_at(text, m.start())
        found.append((f"{alert} {m.group(2)} -> {new:g}", alert,
                      text[:m.start(2)] + f"{new:g}" + text[m.end(2):]))
    for m in FOR_LINE.finditer(text):
        minutes = int(m.group(2))
        for new in (f"{minutes * 30}s", f"{minutes * 2}m"):
            # m.end(2) + 1 skips the "m" unit of the original value.
            alert = _alert_at(text, m.start())
            found.append((f"{alert} for {minutes}m -> {new}", alert,
                          text[:m.start(2)] + new + text[m.end(2) + 1:]))
    return found


def test_mutations_cover_every_threshold_and_for() -> None:
    mutations = _mutations()
    # 12 comparison thresholds (one per alert, churn has two) and the `for` of every alert but
    # DBServerFull (which has none), halved and doubled.
    assert {a for _, a, _ in mutations} == set(EXPECTED_ALERTS)
    assert len(mutations) == 12 + 2 * (len(EXPECTED_ALERTS) - 1)


@pytest.mark.parametrize(("description", "alert", "text"),
                         [pytest.param(d, a, t, id=d) for d, a, t in _mutations()])
def test_rule_tests_catch_a_changed_threshold(tmp_path: Path, description: str, alert: str,
                                              text: str) -> None:
    load_rules(text)  # still a valid rule file
    assert _mutated_suite_fails(tmp_path, text, alert), \
        f"rule tests still pass after {description}"


# --- the per-server rules on a real Prometheus, over a real instrumented app ----------------

FLEET_APP = """
import sys, time
import sqlalchemy as sa
import poolwatch
url, port, seconds, size = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
big = sa.create_engine(url, pool_size=size, max_overflow=0, connect_args={"application_name": "pw-alerts-big"})
small = sa.create_engine(url, pool_size=5, max_overflow=5, connect_args={"application_name": "pw-alerts-small"})
poolwatch.instrument(big, name="alerts-big", labels={"role": "primary"}, port=port, addr="127.0.0.1")
poolwatch.instrument(small, name="alerts-small", labels={"role": "primary"})
for engine in (big, small):  # one connection each: the limit is read on a new connection
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
print("ready", flush=True)
time.sleep(seconds)
"""


@pytest.mark.scenario
def test_per_server_rules_on_a_real_prometheus_scraping_a_real_app(
        postgres_url: str, tmp_path: Path) -> None:
    """Two pools whose maxima (the server's limit, and 10 more) exceed what the real server allows
    (max_connections less the reserved slots), though they open one connection each: the real
    exporter's labels join, the budget alert goes pending for
    127.0.0.1:5432 with the role, and when the process is killed the server's sums vanish at
    the next scrape (stale series), as does the alert."""
    server_url = sqlalchemy.engine.make_url(postgres_url)
    engine = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as conn:
        allowed = conn.execute(sqlalchemy.text(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - coalesce(current_setting('reserved_connections', true)::int, 0)")).scalar_one()
    engine.dispose()
    key = (server_url.host or "", str(server_url.port or 5432))

    port = free_port()
    with (tmp_path / "app.log").open("w") as log:
        app = subprocess.Popen([sys.executable, "-c", FLEET_APP, postgres_url, str(port), "120",
                                str(allowed)],
                               stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_for_port(port, timeout=30)
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": ["rules/poolwatch.rules.yml"],
                  "scrape_configs": [{"job_name": "pw-alerts", "static_configs": [
                      {"targets": [f"127.0.0.1:{port}"]}]}]}
        rules = scale_durations(RULES_FILE.read_text(), 1 / 30)
        with prometheus(yaml.safe_dump(config), {"rules/poolwatch.rules.yml": rules}) as prom:
            poll("the server's limit recorded",
                  lambda: server_values(prom, "poolwatch:server_connections_max:min"))
            assert server_values(prom, "poolwatch:server_connections_max:min") == {key: allowed}
            assert server_values(prom, "poolwatch:server_connection_demand:sum") == {key: allowed + 10}
            assert server_values(prom, "poolwatch:server_connections_open:sum") == {key: 2}

            def budget_alert() -> list[dict[str, Any]]:
                return [a for a in query(prom, 'ALERTS{alertname="DBConnectionBudgetExceeded"}')
                        if a["metric"]["alertstate"] in ("pending", "firing")]

            (alert,) = poll("DBConnectionBudgetExceeded pending", budget_alert)
            assert {k: alert["metric"][k] for k in ("server_address", "server_port", "role",
                                                     "severity")} == {
                "server_address": key[0], "server_port": key[1], "role": "primary",
                "severity": "warning"}
            assert not query(prom, 'ALERTS{alertname="DBServerConnectionsNearLimit"}')

            app.kill()
            app.wait(10)
            poll("the target down", lambda: query(prom, 'up{job="pw-alerts"} == 0'))
            # The first failed scrape marked the app's series stale, so the next evaluation
            # counts nothing (without staleness the last samples would count for the 5m
            # lookback, far past this bound).
            poll("the server's sums gone", lambda: not (
                query(prom, "poolwatch:server_connection_demand:sum")
                or query(prom, "pool:poolwatch_pool:live")), timeout=30)
            poll("the budget alert gone", lambda: not budget_alert(), timeout=30)
    finally:
        app.kill()
        app.wait(10)
