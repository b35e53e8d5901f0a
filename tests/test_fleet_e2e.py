"""Issue #16 end to end: a fleet of three instrumented processes on one throwaway PostgreSQL
(max_connections=20, superuser_reserved_connections=3: 17 for the fleet's role), each pool
pool_size=5, max_overflow=3, scraped by a real Prometheus running the shipped rules (`for`
shortened, logic unchanged).

Three instances may open 24 connections against 17: every pool reads the limit 17, the server's
demand is 24, DBConnectionBudgetExceeded goes pending and fires. One instance stops: the demand
is 16 from the next evaluations, the alert resolves and, with two instances, stays silent. The
open connections Prometheus adds up are the ones the server itself lists in pg_stat_activity.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.support.promql import poll, poll_equal, query, server_values, values_by
from tests.support.rules import REPO, RULES_FILE, alerts, scale_durations, seconds
from tests.support.services import (
    PrometheusServer,
    ThrowawayCluster,
    free_port,
    prometheus,
    unavailable,
    wait_for_port,
)

APP = REPO / "tests" / "e2e" / "fleet_app.py"
APP_SECONDS = 120  # each instance stops by itself after this; the test needs about 30 s
JOB = "poolwatch-fleet-e2e"
NAMES = ("fleete2e-a", "fleete2e-b", "fleete2e-c")  # pool names, and application_name
MAX_CONNECTIONS, RESERVED = 20, 3
ALLOWED = MAX_CONNECTIONS - RESERVED  # 17
PER_POOL = 5 + 3  # pool_size + max_overflow
OPEN_PER_POOL = {"used": 1.0, "idle": 1.0}  # what fleet_app.py holds
# `for: 10m` of DBConnectionBudgetExceeded becomes 5 s, `for: 5m` 3 s (never below 3 s).
TIME_FACTOR = 1 / 120
RULES = scale_durations(RULES_FILE.read_text(), TIME_FACTOR)
BUDGET_FOR = seconds(alerts(RULES)["DBConnectionBudgetExceeded"]["for"])
BUDGET = 'ALERTS{alertname="DBConnectionBudgetExceeded"}'
NEAR_LIMIT = 'ALERTS{alertname="DBServerConnectionsNearLimit"}'
DEMAND = "poolwatch:server_connection_demand:sum"
POOL = "db_client_connection_pool_name"


@dataclass
class Instance:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def cluster() -> Iterator[ThrowawayCluster]:
    try:
        server = ThrowawayCluster({"max_connections": str(MAX_CONNECTIONS),
                                   "superuser_reserved_connections": str(RESERVED)})
    except Exception as e:
        unavailable(f"a throwaway PostgreSQL cluster ({e})")
        raise
    try:
        yield server
    finally:
        server.destroy()


def ready(instance: Instance) -> bool:
    output = instance.log.read_text()
    assert instance.proc.poll() is None, f"{instance.name} exited: {output[-2000:]}"
    return "ready" in output.splitlines()


@pytest.fixture
def fleet(cluster: ThrowawayCluster, tmp_path: Path) -> Iterator[dict[str, Instance]]:
    """The three instances, by pool name, each holding its connections; every one is killed at
    the end."""
    instances: dict[str, Instance] = {}
    try:
        for name in NAMES:
            port, log = free_port(), tmp_path / f"{name}.log"
            with log.open("w") as out:
                proc = subprocess.Popen(
                    [sys.executable, str(APP), "--db", cluster.url, "--name", name,
                     "--port", str(port), "--duration", str(APP_SECONDS)],
                    stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
            instances[name] = Instance(name, port, proc, log)
        for instance in instances.values():
            wait_for_port(instance.port, timeout=30)
            # Its connections are open before Prometheus starts: every scrape sees them.
            poll(f"{instance.name} ready", functools.partial(ready, instance), timeout=45)
        yield instances
    finally:
        for instance in instances.values():
            instance.proc.kill()
            instance.proc.wait(10)


@pytest.fixture
def prom(fleet: dict[str, Instance]) -> Iterator[PrometheusServer]:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules/poolwatch.rules.yml"],
        "scrape_configs": [{"job_name": JOB, "static_configs": [
            {"targets": [f"127.0.0.1:{i.port}" for i in fleet.values()]}]}],
    }
    with prometheus(yaml.safe_dump(config), {"rules/poolwatch.rules.yml": RULES}) as server:
        yield server


def pg_open(cluster: ThrowawayCluster) -> dict[str, int]:
    """The server's own count of connections per application_name, for the fleet's names."""
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres",
                         application_name="fleete2e-check") as conn:
        rows = conn.execute("SELECT application_name, count(*) FROM pg_stat_activity"
                            " WHERE application_name = ANY(%s) GROUP BY 1", [list(NAMES)])
        return {str(name): int(n) for name, n in rows}


def prom_open(prom: PrometheusServer) -> dict[str, float]:
    """Open connections (used + idle) per pool, as Prometheus has them."""
    return {pool: v for (pool,), v in values_by(
        prom, f"sum by ({POOL}) (db_client_connection_count)", POOL).items()}


def budget_alerts(prom: PrometheusServer) -> list[dict[str, Any]]:
    return [a for a in query(prom, BUDGET) if a["metric"]["alertstate"] in ("pending", "firing")]


def latest_evaluation(prom: PrometheusServer) -> float:
    """When the rules last recorded the server's demand (Prometheus's clock, seconds)."""
    return max((v for v in values_by(prom, f"timestamp({DEMAND})").values()), default=0.0)


@pytest.mark.scenario
def test_three_instances_exceed_the_servers_budget_and_two_fit(
        cluster: ThrowawayCluster, fleet: dict[str, Instance], prom: PrometheusServer) -> None:
    started = time.time()
    server = ("127.0.0.1", str(cluster.port))
    every_pool = set(NAMES)

    # The limit each pool read: max_connections less the superuser's reserved slots.
    limits = poll_equal(
        "every pool's server limit", lambda: {p: v for (p,), v in values_by(
            prom, "poolwatch_server_connections_max", POOL).items()},
        {name: float(ALLOWED) for name in NAMES}, timeout=45)
    assert all(set(v.values()) == {float(ALLOWED)} for v in limits if v), limits
    info = values_by(prom, "poolwatch_pool_info", POOL, "server_address", "server_port")
    assert info == {(name, *server): 1.0 for name in NAMES}

    # Three instances: 24 connections wanted of 17 allowed. The alert needs all three counted.
    (pending,) = poll("DBConnectionBudgetExceeded pending", lambda: budget_alerts(prom), 30)
    assert {k: pending["metric"][k] for k in ("server_address", "server_port", "role",
                                               "severity")} == {
        "server_address": server[0], "server_port": server[1], "role": "primary",
        "severity": "warning"}
    assert server_values(prom, DEMAND) == {server: 3.0 * PER_POOL}
    assert server_values(prom, "poolwatch:server_connections_max:min") == {server: ALLOWED}
    poll("DBConnectionBudgetExceeded firing after the scaled `for`",
         lambda: [a for a in budget_alerts(prom) if a["metric"]["alertstate"] == "firing"], 30)
    assert query(prom, 'count_over_time(ALERTS{alertname="DBConnectionBudgetExceeded",'
                       ' alertstate="pending"}[1m])'), \
        "the budget alert fired without being pending first"

    # The open connections Prometheus adds up are the server's own.
    by_state = values_by(prom, "db_client_connection_count", POOL, "db_client_connection_state")
    assert by_state == {(name, state): n for name in NAMES for state, n in OPEN_PER_POOL.items()}
    assert prom_open(prom) == {name: 2.0 for name in NAMES}
    assert pg_open(cluster) == {name: 2 for name in NAMES}
    assert server_values(prom, "poolwatch:server_connections_open:sum") == {server: 6.0}

    # One instance stops: its demand stops counting at the next evaluations.
    gone = fleet[NAMES[-1]]
    gone.proc.terminate()
    gone.proc.wait(10)
    demands = poll_equal("the demand of two instances", lambda: server_values(prom, DEMAND),
                         {server: 2.0 * PER_POOL}, timeout=30)
    assert all(d in ({server: 3.0 * PER_POOL}, {server: 2.0 * PER_POOL}) for d in demands), demands
    poll("DBConnectionBudgetExceeded resolved", lambda: not budget_alerts(prom), 30)
    remaining = every_pool - {gone.name}
    poll_equal("the stopped instance's connections closed on the server",
               lambda: pg_open(cluster), {name: 2 for name in remaining}, timeout=30)
    assert prom_open(prom) == {name: 2.0 for name in remaining}
    assert server_values(prom, "poolwatch:server_connections_open:sum") == {server: 4.0}
    assert server_values(prom, "poolwatch:server_connections_max:min") == {server: ALLOWED}

    # Two instances (16 of 17): silent for longer than the scaled `for`, every evaluation.
    quiet_since = time.time()
    poll("evaluations past the scaled `for`",
         lambda: latest_evaluation(prom) > quiet_since + BUDGET_FOR + 2, 30)
    window = f"{int(time.time() - quiet_since)}s"
    for fn in ("min_over_time", "max_over_time"):
        assert server_values(prom, f"{fn}({DEMAND}[{window}])") == {server: 2.0 * PER_POOL}
    assert not query(prom, f"count_over_time({BUDGET}[{window}])")
    assert [i.proc.poll() for i in fleet.values() if i.name in remaining] == [None, None], \
        [i.log.read_text()[-2000:] for i in fleet.values()]

    # 6 (then 4) open connections of 17 never came near DBServerConnectionsNearLimit's 90 %.
    assert not query(prom, f"count_over_time({NEAR_LIMIT}[{int(time.time() - started) + 1}s])")
