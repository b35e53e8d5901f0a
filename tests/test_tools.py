"""poolwatch.tools, fast: the arithmetic (bucket quantiles, durations, selectors, Little's law),
top's rows from two real reads of an instrumented pool, and every bad input of `top` and
`doctor` (an unreachable URL, a Prometheus without poolwatch series, a malformed selector):
one clear line on stderr and exit 2. The real-Prometheus pathologies are in
tests/test_doctor_scenarios.py."""

from __future__ import annotations

import ast
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

import poolwatch
from poolwatch import cli
from poolwatch.tools import findings, history, names
from poolwatch.tools.promql import format_duration, parse_duration, selector_matchers
from poolwatch.tools.rows import PoolRow, pool_rows
from poolwatch.tools.scrape import (
    Read,
    bucket_quantile,
    metrics_url,
    registry_read,
    samples_from_families,
)
from poolwatch.tools.sizing import Demand, recommend
from poolwatch.tools.table import render_plain, render_table
from tests.support.services import PrometheusServer, free_port, prometheus

TOOLS = Path(poolwatch.__file__).parent / "tools"


def test_tools_import_only_the_standard_library_prometheus_client_and_rich() -> None:
    allowed = {"prometheus_client", "rich"}
    for path in TOOLS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                top = node.module.split(".")[0]
            elif isinstance(node, ast.Import):
                (top,) = {a.name.split(".")[0] for a in node.names}
            else:
                continue
            assert top in allowed or top in __import__("sys").stdlib_module_names, (path, top)
        # Relative imports stay inside tools/ (level 1), never poolwatch's sources or backends.
        assert all(n.level <= 1 for n in ast.walk(ast.parse(path.read_text()))
                   if isinstance(n, ast.ImportFrom)), path


def test_names_are_the_contracts() -> None:
    contract = (Path(__file__).parents[1] / "README.md").read_text()
    spelled = {v for k, v in vars(names).items() if k in names.__all__}
    assert len(spelled) == len(names.__all__)  # no name twice
    # Every metric and label is in the README's metrics reference.
    missing = {m for m in spelled if m.startswith(("db_client_", "poolwatch_"))
               and f"`{m}" not in contract}
    assert not missing, missing


def test_names_are_in_the_catalog() -> None:
    """tools/ may not import the catalog (it reads from outside); this keeps the two in step."""
    from poolwatch.core.catalog import CATALOG, POOL_LABEL, prometheus_name

    exported = {prometheus_name(m.otel, m.unit) + ("_total" if m.kind == "counter" else ""): m
                for m in CATALOG}
    metrics = {names.COUNT, names.MAX, names.PENDING, names.WAIT_LONGEST, names.CONNECTION_LEAKED,
               names.POOL_INFO, names.SERVER_CONNECTIONS_MAX, names.CONNECTION_TIMEOUTS, names.CONNECTION_LEAKS,
               names.CONNECTION_ERRORS, names.WAIT_TIME, names.USE_TIME, names.CREATE_TIME,
               names.OPERATION_DURATION}
    assert metrics <= set(exported), metrics - set(exported)
    assert names.POOL == POOL_LABEL
    assert names.STATE in exported[names.COUNT].labels
    assert names.QUERY_SUMMARY in exported[names.OPERATION_DURATION].labels
    assert names.ERROR_TYPE in exported[names.CONNECTION_ERRORS].labels
    assert {names.SERVER_ADDRESS, names.SERVER_PORT} <= set(exported[names.POOL_INFO].labels)


@pytest.mark.parametrize(("q", "buckets", "expected"), [
    (0.5, {0.1: 5, 0.2: 10, math.inf: 10}, 0.1),
    (0.75, {0.1: 5, 0.3: 10, math.inf: 10}, 0.2),
    (0.95, {0.1: 0, math.inf: 4}, 0.1),  # in +Inf: the highest finite bound
    (0.5, {0.1: 0, 0.2: 0, math.inf: 0}, None),
    (0.5, {}, None),
])  # fmt: skip
def test_bucket_quantile(q: float, buckets: dict[float, float], expected: float | None) -> None:
    assert bucket_quantile(q, buckets) == expected


def test_durations() -> None:
    assert [parse_duration(s) for s in ("30s", "1h", "1h30m", "500ms", "2d")] == [
        30, 3600, 5400, 0.5, 172800]
    for bad in ("", "1x", "h", "30", "-1s", "0s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert [format_duration(s) for s in (3.0, 1.5, 0.0001)] == ["3s", "1500ms", "1ms"]


def test_selectors() -> None:
    assert selector_matchers('{job="api"}') == 'job="api"'
    assert selector_matchers(' job="api", role=~"r.*", ') == 'job="api", role=~"r.*"'
    assert [selector_matchers(s) for s in (None, "", "{}")] == ["", "", ""]
    for bad in ('{job="api"', 'job="api"}', '{a="1"}{b="2"}'):
        with pytest.raises(ValueError, match="is not a label selector"):
            selector_matchers(bad)


def test_metrics_url() -> None:
    assert metrics_url("127.0.0.1:9464") == "http://127.0.0.1:9464/metrics"
    assert metrics_url("http://h:1/") == "http://h:1/metrics"
    assert metrics_url("https://h/custom?x=1") == "https://h/custom?x=1"


def test_littles_law() -> None:
    d = Demand(checkouts=600, window=60, peak_rate=20, wait_mean=0.05, hold_mean=0.1, hold_p=0.2)
    # mean: 10/s x 0.15 s = 1.5 -> x1.2 = 1.8 -> 2; peak: 20/s x 0.25 s = 5 -> x1.2 = 6 in all.
    r = recommend(d)
    assert r is not None and (r.pool_size, r.max_overflow) == (2, 4)
    assert r.arithmetic == [
        "mean demand = 10 checkouts/s x (0.05 s wait + 0.1 s hold) = 1.5 connections;"
        " x 1.2 headroom -> pool_size 2",
        "peak demand = 20 checkouts/s x (0.05 s wait + 0.2 s hold p95) = 5 connections;"
        " x 1.2 headroom -> 6 in all, max_overflow 4",
    ]
    capped = recommend(Demand(**{**d.__dict__, "server_max": 20, "instances": 5}))
    assert capped is not None and (capped.pool_size, capped.max_overflow) == (2, 2)
    assert capped.arithmetic[-1] == ("capped: server limit 20 / 5 instance(s) = 4 connections"
                                     " each -> pool_size 2, max_overflow 2")
    roomy = recommend(Demand(**{**d.__dict__, "server_max": 100, "instances": 5}))
    assert roomy is not None and (roomy.pool_size, roomy.max_overflow) == (2, 4)
    # No peak known: the mean rate; no percentile: the mean hold. No checkouts: nothing to say.
    flat = recommend(Demand(checkouts=600, window=60, peak_rate=None, wait_mean=0, hold_mean=0.5,
                            hold_p=None))
    assert flat is not None and (flat.pool_size, flat.max_overflow) == (6, 0)
    assert recommend(Demand(0, 60, None, 0, 0, None)) is None


@pytest.fixture
def registry_engine(make_engine, tmp_path: Path) -> Iterator[tuple[CollectorRegistry, str]]:
    registry = CollectorRegistry()
    engine = make_engine(f"sqlite:///{tmp_path / 'rows.db'}", poolclass=QueuePool, pool_size=2,
                         max_overflow=0)
    poolwatch.instrument(engine, name="tools-rows", registry=registry, leak_threshold=60)
    yield registry, engine


def test_rows_from_two_reads_of_a_real_registry(registry_engine) -> None:
    registry, engine = registry_engine
    assert registry_read(registry).samples == samples_from_families(registry.collect())
    first = Read("local", "local", 100.0, samples_from_families(registry.collect()))
    held = engine.connect()
    held.execute(text("SELECT 1"))
    for _ in range(4):
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    second = Read("local", "local", 102.0, samples_from_families(registry.collect()))
    held.close()

    (only_now,) = pool_rows([second])  # no previous read: gauges, no rates
    assert (only_now.used, only_now.idle, only_now.max, only_now.window) == (1, 1, 2, None)
    assert (only_now.created_per_s, only_now.wait_p95, only_now.statements) == (None, None, ())

    (row,) = pool_rows([second], [first])
    assert (row.instance, row.pool, row.job, row.window) == ("local", "tools-rows", "", 2.0)
    assert (row.used, row.idle, row.max, row.saturation, row.waiting) == (1, 1, 2, 0.5, 0)
    assert (row.created_per_s, row.timeouts_per_min, row.leaked, row.leaks) == (1.0, 0, 0, 0)
    assert row.wait_p95 is not None and row.wait_p95 <= 0.1
    assert [(s.summary, s.share) for s in row.statements] == [("SELECT", 1.0)]


def test_rows_sort_and_render() -> None:
    rows = pool_rows([
        Read("a", "a:1", 0.0, error="connection refused"),
        Read("b", "b:1", 0.0, samples_from_families([])),
    ])
    assert rows == [PoolRow(instance="a:1", pool="", error="connection refused")]
    assert render_plain(rows).splitlines()[1].split() == ["a:1", "unreachable:", "connection",
                                                          "refused"]
    assert render_plain([]).splitlines()[-1] == "(no pools)"
    table = render_table([*rows, PoolRow(instance="b:1", pool="p", used=3, idle=1, max=4)])
    assert table.row_count == 2


# --- bad input: one line on stderr, exit 2 ----------------------------------------------------


@pytest.fixture(scope="module")
def empty_prometheus() -> Iterator[PrometheusServer]:
    """A real Prometheus that scrapes nothing."""
    with prometheus("global: {scrape_interval: 1s}\nscrape_configs: []\n") as server:
        yield server


def fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.endswith("\n") and "\n" not in err[:-1], err
    return err.rstrip("\n")


def test_unreachable_prometheus(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert fails(capsys, "doctor", "--prometheus", url) == (
        f"poolwatch doctor: cannot reach Prometheus at {url}: connection refused")
    assert fails(capsys, "top", "--once", "--prometheus", url) == (
        f"poolwatch top: cannot reach Prometheus at {url}: connection refused")


def test_unreachable_endpoints_only(capsys: pytest.CaptureFixture[str]) -> None:
    down = f"127.0.0.1:{free_port()}"
    code = cli.main(["top", "--once", "--interval", "0.01", down])
    out, err = capsys.readouterr()
    assert (code, err) == (2, "poolwatch top: no target could be read\n")
    assert out.splitlines()[1].split() == [down, "unreachable:", "connection", "refused"]


def test_prometheus_without_poolwatch_series(empty_prometheus: PrometheusServer,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url = empty_prometheus.url
    assert fails(capsys, "doctor", "--prometheus", url, "--window", "5m") == (
        f"poolwatch doctor: no poolwatch series at {url} in the last 5m")
    assert fails(capsys, "doctor", "--prometheus", url, "--selector", '{job="api"}') == (
        f'poolwatch doctor: no poolwatch series matching {{job="api"}} at {url} in the last 1h')
    assert fails(capsys, "top", "--once", "--prometheus", url) == (
        f"poolwatch top: no poolwatch series at {url}")


def test_malformed_selector(empty_prometheus: PrometheusServer,
                            capsys: pytest.CaptureFixture[str]) -> None:
    url = empty_prometheus.url
    err = fails(capsys, "doctor", "--prometheus", url, "--selector", "{job=api}")
    assert err == ("poolwatch doctor: --selector '{job=api}' is not a valid label selector: parse"
                   ' error: unexpected identifier "api" in label matching, expected string')
    assert fails(capsys, "doctor", "--prometheus", url, "--selector", '{job="api"') == (
        "poolwatch doctor: --selector: '{job=\"api\"' is not a label selector"
        ' (expected {label="value"})')
    assert fails(capsys, "top", "--once", "--prometheus", url, "--selector", "{job=api}") == (
        err.replace("doctor", "top"))


def test_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert fails(capsys, "doctor", "--prometheus", "x", "--window", "soon") == (
        "poolwatch doctor: --window: 'soon' is not a duration (e.g. 30s, 15m, 1h, 1h30m)")
    assert fails(capsys, "top", "--once") == (
        "poolwatch top: give /metrics URLs or --prometheus URL (one of them)")
    assert fails(capsys, "top", "--json", "h:1") == "poolwatch top: --json needs --once"
    assert fails(capsys, "top", "--once", "--selector", "{}", "h:1") == (
        "poolwatch top: --selector needs --prometheus")


# --- doctor's rules at their thresholds (the scenarios show them on real data) ---------------

KEY = ("api", "h:1", "p")


def kinds(window: float = 60.0, server: tuple[float, float] | None = None,
          summaries: tuple[tuple[str, float, float], ...] = (), **values: float) -> list[str]:
    """The kinds doctor finds for one pool whose queries returned ``values``; ``server`` is the
    (fleet maxima, limit) of its server, ``summaries`` (summary, seconds, executions)."""
    data = history.Data(
        values={name: (name, {KEY: v}) for name, v in values.items()},
        summaries=("", {(*KEY, s): secs for s, secs, _ in summaries}),
        summary_counts=("", {(*KEY, s): count for s, _, count in summaries}),
        info={KEY: {"server_address": "db", "server_port": "5432"}} if server else {},
        servers={("db", "5432"): {"demand": server[0], "limit": server[1]}} if server else {},
        fleet_promql={}, instances={})
    return [f.kind for f in findings.find(findings.Pool(data, KEY, window))]


def test_undersized_unless_the_statements_are_slow() -> None:
    full = {"max": 2, "used_max": 2, "checkouts": 1000, "wait_seconds": 10}  # mean wait 10 ms
    assert kinds(**full) == ["healthy"]
    assert kinds(**full, wait_p95=0.05) == ["undersized"]
    assert kinds(**{**full, "wait_seconds": 50}) == ["undersized"]  # mean wait 50 ms
    assert kinds(**full, timeouts=1) == ["undersized"]
    assert kinds(**{**full, "used_max": 1}, timeouts=1) == ["healthy"]  # never at the maximum
    slow = (("SELECT orders", 30.0, 100.0),)  # mean 0.3 s, all of the 30 s held
    assert kinds(**full, timeouts=1, hold_seconds=30, summaries=slow) == ["slow_queries"]


def test_oversized() -> None:
    assert kinds(max=20, used_max=10, idle_min=10) == ["oversized"]
    assert kinds(max=20, used_max=11, idle_min=10) == ["healthy"]  # uses more than half
    assert kinds(max=20, used_max=10, idle_min=9) == ["healthy"]
    assert kinds(max=20, used_max=2, server=(80, 100)) == ["oversized"]  # the server is pressed
    assert kinds(max=20, used_max=2, server=(79, 100)) == ["healthy"]
    assert kinds(max=20, used_max=2, server=(101, 100)) == ["oversized", "budget_exceeded"]
    assert kinds(max=20, used_max=15, server=(101, 100)) == ["budget_exceeded"]


def test_held_outside_queries_and_slow_queries() -> None:
    held = {"holds": 100, "hold_seconds": 5, "statements": 200}  # mean hold 50 ms
    assert kinds(**held, statement_seconds=1.25) == ["held_outside_queries"]  # 25 %
    assert kinds(**held, statement_seconds=1.3) == ["healthy"]
    assert kinds(**{**held, "hold_seconds": 4.9}, statement_seconds=0.1) == ["healthy"]  # 49 ms
    assert kinds(**{**held, "statements": 0}, statement_seconds=0) == ["healthy"]  # no statement metrics
    few = (("SELECT a", 2.5, 25.0), ("SELECT b", 0.1, 1000.0))  # a: mean 0.1 s, half the held time
    assert kinds(hold_seconds=5, statement_seconds=2.6, summaries=few) == ["slow_queries"]
    fast = (("SELECT a", 2.5, 26.0),)  # mean 96 ms
    assert kinds(hold_seconds=5, statement_seconds=2.5, summaries=fast) == ["healthy"]
    four = tuple((f"SELECT t{i}", 1.0, 5.0) for i in range(4))  # the 3 biggest: 3 of 6.5 s
    assert kinds(hold_seconds=6.5, statement_seconds=4, summaries=four) == ["healthy"]


def test_churn_leak_server_full() -> None:
    assert kinds(created=100, checkouts=100) == ["churn"]
    assert kinds(created=50, checkouts=100) == ["churn"]
    assert kinds(created=49, checkouts=100) == ["healthy"]
    # A pool growing to its working size opens connections, replacing none.
    assert kinds(created=20, checkouts=30, open_now=20, open_before=0) == ["healthy"]
    assert kinds(created=40, checkouts=30, open_now=20, open_before=0) == ["churn"]
    assert kinds(window=3600, created=59, checkouts=59) == ["healthy"]  # under 1/min
    assert kinds(leaked_max=1) == kinds(leaks=1) == ["leak"]
    assert kinds(refused_full=1) == ["server_full"]


def test_live_top_fails_before_going_live(empty_prometheus: PrometheusServer,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    err = fails(capsys, "top", "--prometheus", empty_prometheus.url, "--selector", "{job=api}")
    assert err.startswith("poolwatch top: --selector '{job=api}' is not a valid label selector:")


@pytest.mark.slow
def test_live_view_renders_until_interrupted(registry_engine) -> None:
    """`poolwatch top` live (rich) against a real endpoint and a dead one, until Ctrl-C."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app

    registry, engine = registry_engine
    with engine.connect() as c:
        c.execute(text("SELECT 1"))
    metrics = make_wsgi_app(registry)
    scrapes = threading.Semaphore(0)

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        scrapes.release()
        return metrics(environ, start_response)

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "poolwatch", "top", "--interval", "0.2",
             f"127.0.0.1:{server.server_port}", f"127.0.0.1:{free_port()}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "COLUMNS": "200"})
        for _ in range(3):  # a third read comes after two renders, the second with rates
            assert scrapes.acquire(timeout=60), "top never read the endpoint"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert (proc.returncode, err) == (0, "")
    assert "tools-rows" in out and "connection refused" in out
    assert "[#" in out or "[-" in out  # the used/idle bar


def test_once_needs_no_rich() -> None:
    """`top --once` and `doctor` work from a plain install (rich comes with the demo extra)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['rich'] = None; from poolwatch.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    dead = f"127.0.0.1:{free_port()}"
    once = subprocess.run([sys.executable, "-c", code, "top", "--once", "--interval", "0.01", dead],
                          capture_output=True, text=True, timeout=60)
    assert (once.returncode, once.stderr) == (2, "poolwatch top: no target could be read\n")
    live = subprocess.run([sys.executable, "-c", code, "top", dead],
                          capture_output=True, text=True, timeout=60)
    assert (live.returncode, live.stderr) == (2, "poolwatch top: the live view needs rich: pip"
                                              " install 'poolwatch[demo]' (or use --once)\n")
