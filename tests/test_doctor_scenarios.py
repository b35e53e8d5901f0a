"""`poolwatch doctor` and `poolwatch top` against a real Prometheus scraping a real instrumented
app on the real PostgreSQL (tests/e2e/doctor_app.py: one pool per pathology plus a healthy
control), and a static exposition for the fleet rules (the server limit series of issue #16 and
the `too_many_connections` refusals): doctor names exactly the expected kinds, and the size it
recommends for the undersized pool removes the waits when the workload reruns with it.

Bounded: one app process and one Prometheus (1 s scrapes), a 30 s window, a 20 s rerun."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from poolwatch import cli
from tests.support.rules import REPO
from tests.support.services import PrometheusServer, free_port, prometheus

pytestmark = [pytest.mark.slow, pytest.mark.scenario]

APP = REPO / "tests" / "e2e" / "doctor_app.py"
APP_SECONDS = 120  # the app stops by itself after this; the module needs about 60 s of it
WINDOW = 30  # seconds of history doctor reads
RERUN_WINDOW = 20
POOL = "db_client_connection_pool_name"

EXPECTED = {
    "undersized": {"undersized"},
    "oversized": {"oversized"},
    "held": {"held_outside_queries"},
    "slow": {"slow_queries"},
    "leak": {"leak"},
    "churn": {"churn"},
    "healthy": {"healthy"},
    # The static fleet: two pools whose maxima (60 + 60) exceed their server's 100, neither
    # using any of it; one pool the server refuses as full; one with room to spare.
    "fleet_a": {"budget_exceeded", "oversized"},
    "fleet_b": {"budget_exceeded", "oversized"},
    "fleet_refused": {"server_full"},
    "fleet_roomy": {"healthy"},
}
FLEET = (  # pool, server, max, server limit
    ("fleet_a", "db1.example", 60, 100),
    ("fleet_b", "db1.example", 60, 100),
    ("fleet_refused", "db3.example", 5, 100),
    ("fleet_roomy", "db2.example", 10, 500),
)


class FleetExposition(BaseHTTPRequestHandler):
    """What poolwatch will export for pools on servers it knows the limit of (issue #16), served
    as a static target; `fleet_refused` is refused once per scrape."""

    scrapes = 0

    def do_GET(self) -> None:
        FleetExposition.scrapes += 1
        lines = []
        for pool, server, cmax, limit in FLEET:
            p = f'{POOL}="{pool}",app="fleet"'
            lines += [
                f'db_client_connection_count{{{p},db_client_connection_state="used"}} 0',
                f'db_client_connection_count{{{p},db_client_connection_state="idle"}} 0',
                f"db_client_connection_max{{{p}}} {cmax}",
                f"poolwatch_server_connections_max{{{p}}} {limit}",
                f'poolwatch_pool_info{{{p},pool_class="QueuePool",pool_size="{cmax}",'
                f'max_overflow="0",server_address="{server}",server_port="5432"}} 1',
            ]
            refused = FleetExposition.scrapes if pool == "fleet_refused" else 0
            lines.append(f'poolwatch_connection_errors_total{{{p},error_type="too_many_connections"}}'
                         f" {refused}")
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Scenario:
    app: str
    down: str  # scraped by Prometheus, never up
    prom: PrometheusServer
    started: float  # monotonic, when Prometheus began scraping
    stdin: IO[str]
    stdout: IO[str]


def read_line(stream: IO[str], expected: str, log: Path) -> None:
    line = stream.readline()  # the app prints it within seconds, or dies (EOF)
    assert line.strip() == expected, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def scenario(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    log_path = tmp_path_factory.mktemp("doctor") / "app.log"
    port = free_port()
    down = f"127.0.0.1:{free_port()}"  # a target of the job that never answers
    fleet = ThreadingHTTPServer(("127.0.0.1", 0), FleetExposition)
    threading.Thread(target=fleet.serve_forever, daemon=True).start()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(APP), "--db", postgres_url, "--port", str(port),
             "--duration", str(APP_SECONDS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            read_line(proc.stdout, "ready", log_path)
            config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "doctor", "static_configs": [
                        {"targets": [f"127.0.0.1:{port}", down]}]},
                    {"job_name": "fleet", "static_configs": [
                        {"targets": [f"127.0.0.1:{fleet.server_address[1]}"]}]},
                ],
            }
            with prometheus(yaml.safe_dump(config)) as prom:
                yield Scenario(f"127.0.0.1:{port}", down, prom, time.monotonic(), proc.stdin,
                               proc.stdout)
            assert proc.poll() is None, log_path.read_text()[-3000:]
        finally:
            proc.kill()
            proc.wait(10)
            proc.stdin.close()
            proc.stdout.close()
            fleet.shutdown()
            fleet.server_close()


def query_value(prom: PrometheusServer, expr: str) -> float:
    with urllib.request.urlopen(f"{prom.url}/api/v1/query?"
                                + urllib.parse.urlencode({"query": expr}), timeout=10) as r:
        (sample,) = json.load(r)["data"]["result"]
    return float(sample["value"][1])


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if "--json" in argv and out else out, err


def test_top_once_against_live_endpoints_one_down(scenario: Scenario,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    down = f"127.0.0.1:{free_port()}"
    # The leak watcher flags the leak pool's connection a second after the app started, on its
    # own thread: on a loaded machine top could otherwise run before it has.
    deadline = time.monotonic() + 30
    leaked = re.compile(r'^poolwatch_connections_leaked\{[^}]*pool_name="leak"[^}]*\} 1\.0$', re.M)
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://{scenario.app}/metrics", timeout=10) as r:
            if leaked.search(r.read().decode()):
                break
        time.sleep(0.2)
    code, snapshot, err = run_cli(capsys, "top", "--once", "--json", "--interval", "1",
                                  scenario.app, down)
    assert (code, err) == (0, "")
    rows = snapshot["pools"]
    assert rows[0] == {**rows[0], "instance": down, "pool": "", "error": "connection refused"}
    by_pool = {r["pool"]: r for r in rows[1:]}
    assert set(by_pool) == {"undersized", "oversized", "held", "slow", "leak", "churn", "healthy"}
    assert all(r["instance"] == scenario.app and r["error"] is None and r["window"] > 0
               for r in by_pool.values())
    saturations = [r["saturation"] or 0.0 for r in rows[1:]]
    assert saturations == sorted(saturations, reverse=True)
    assert by_pool["undersized"]["max"] == 2
    oversized = by_pool["oversized"]
    assert (oversized["max"], oversized["used"] + oversized["idle"]) == (12, 12)
    assert by_pool["churn"]["max"] is None and by_pool["churn"]["created_per_s"] > 0
    assert (by_pool["leak"]["leaked"], by_pool["healthy"]["leaked"]) == (1, 0)
    assert by_pool["slow"]["statements"][0]["summary"] == "SELECT pg_class"
    assert by_pool["held"]["hold_p95"] > 0.25  # the time.sleep(0.3) between its two queries

    code, table, err = run_cli(capsys, "top", "--once", "--interval", "1", scenario.app, down)
    lines = table.splitlines()
    assert (code, err, lines[0].split()[:2]) == (0, "", ["instance", "pool"])
    assert lines[1].split() == [down, "unreachable:", "connection", "refused"]
    assert len(lines) == 2 + len(by_pool)


def test_doctor_names_each_pathology_and_its_size_removes_the_waits(
        scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    time.sleep(max(0.0, scenario.started + WINDOW + 2 - time.monotonic()))
    code, report, err = run_cli(capsys, "doctor", "--prometheus", scenario.prom.url,
                                "--window", f"{WINDOW}s", "--json")
    assert (code, err) == (1, "")
    found = {p["pool"]: {f["kind"] for f in p["findings"]} for p in report["pools"]}
    assert found == EXPECTED, json.dumps(report, indent=1)[:20000]
    pools = {p["pool"]: p for p in report["pools"]}
    # Evidence: the PromQL and its value, for every measurement a finding rests on.
    (undersized,) = pools["undersized"]["findings"]
    measured = {m["name"]: m for m in undersized["evidence"]["measurements"]}
    assert (measured["max"]["value"], measured["used_max"]["value"]) == (2, 2)
    assert measured["max"]["promql"] == ("max by (job, instance, db_client_connection_pool_name)"
                                         " (max_over_time(db_client_connection_max[30s]))")
    (slow,) = pools["slow"]["findings"]
    assert [s["summary"] for s in slow["evidence"]["summaries"]] == ["SELECT pg_class"]
    budget = next(f for f in pools["fleet_a"]["findings"] if f["kind"] == "budget_exceeded")
    assert (budget["evidence"]["fleet_maxima"], budget["evidence"]["server_limit"]) == (120, 100)
    assert [(m["name"], m["value"]) for m in budget["evidence"]["measurements"]] == [
        ("server_max", 100)]
    assert pools["fleet_a"]["recommended"] is None  # no checkouts to size from
    assert pools["undersized"]["current"] == {"pool_class": "QueuePool", "pool_size": "2",
                                              "max_overflow": "0", "timeout": "20"}

    # The text report says the same, evidence included.
    code, text, err = run_cli(capsys, "doctor", "--prometheus", scenario.prom.url, "--window",
                              f"{WINDOW}s", "--selector", '{job="fleet"}')
    assert (code, err) == (1, "")
    (fleet,) = {p["instance"] for p in report["pools"] if p["job"] == "fleet"}
    assert [line for line in text.splitlines() if line and not line.startswith(" ")] == [
        f"{pool} on {fleet} (job fleet) (pool_size {size}, max_overflow 0): {kinds}"
        for pool, size, kinds in (("fleet_a", 60, "oversized, budget_exceeded"),
                                  ("fleet_b", 60, "oversized, budget_exceeded"),
                                  ("fleet_refused", 5, "server_full"),
                                  ("fleet_roomy", 10, "healthy"))]
    assert "    server db1.example:5432: fleet maxima 120, limit 100" in text.splitlines()

    recommended = pools["undersized"]["recommended"]
    size, overflow = recommended["pool_size"], recommended["max_overflow"]
    assert size + overflow > 2, recommended
    # The real server's limit (issue #16), one instance: far above the need, so not capped.
    server_max = query_value(scenario.prom, "poolwatch_server_connections_max"
                                            f'{{{POOL}="undersized"}}')
    assert recommended["arithmetic"][-1] == (
        f"within the server's limit: {server_max:.0f} / 1 instance(s) = {server_max:.0f}"
        " connections each")

    # Rerun the same workload with the recommended size: doctor finds it healthy.
    scenario.stdin.write(f"rerun {size} {overflow}\n")
    scenario.stdin.flush()
    assert scenario.stdout.readline().strip() == "rerunning"
    rerun_started = time.monotonic()

    # Meanwhile, top through Prometheus sees the same pools as the endpoint does, and the job's
    # target that is down.
    code, snapshot, err = run_cli(capsys, "top", "--once", "--json", "--prometheus",
                                  scenario.prom.url, "--selector", '{job="doctor"}',
                                  "--window", "10s")
    assert (code, err) == (0, "")
    rows = snapshot["pools"]
    assert rows[0] == {**rows[0], "instance": scenario.down, "pool": "",
                       "error": "last scrape failed (up == 0)"}
    assert {r["pool"] for r in rows[1:]} >= set(EXPECTED) - {p for p, *_ in FLEET}
    assert {r["instance"] for r in rows[1:]} == {scenario.app}

    time.sleep(max(0.0, rerun_started + RERUN_WINDOW + 2 - time.monotonic()))
    code, rerun, err = run_cli(capsys, "doctor", "--prometheus", scenario.prom.url, "--window",
                               f"{RERUN_WINDOW}s", "--json", "--selector",
                               f'{{{POOL}="undersized_rerun"}}')
    (pool,) = rerun["pools"]
    assert (code, err, [f["kind"] for f in pool["findings"]]) == (0, "", ["healthy"]), pool
    assert pool["current"]["pool_size"] == str(size)
