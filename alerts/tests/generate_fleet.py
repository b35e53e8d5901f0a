"""Writes fleet.test.yml: promtool tests of the per-server rules over synthetic fleets.

    python alerts/tests/generate_fleet.py          # rewrite fleet.test.yml
    python alerts/tests/generate_fleet.py --check  # exit 1 if it is out of date

A fleet is 102 instances of 3 services on 2 servers (tests/test_alerts.py checks the counts):

    service  instances  pool (role)            server       max
    api      60         orders (primary)       db-primary   3
                        orders-ro (replica)    db-replica   3
    worker   30         jobs (primary)         db-primary   2
    reports  12         reports (replica)      db-replica   5

so each server sees a demand of 240 connections. Each scenario sets the two servers' limits,
the connections open and when instances come and go; the expected values are worked out by
hand in the comments and pinned exactly in the tests.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).with_name("fleet.test.yml")
STEP = 30  # seconds, scrape and evaluation interval (15s would double the run time)
RUNBOOK = "https://github.com/poolwatch/poolwatch/blob/main/docs/runbooks.md#"
SERVERS = {"primary": "db-primary", "replica": "db-replica"}


@dataclass
class Pool:
    name: str
    role: str  # also says which server: SERVERS[role]
    max: int
    open: int  # used + idle: one used (if any), the rest idle


@dataclass
class Instance:
    job: str
    name: str
    pools: list[Pool]
    start: int = 0  # first step with samples
    end: int | None = None  # first step without; None: to the end
    stale: bool = True  # at `end`: staleness markers (exit, gone) or none (not seen again)
    up_until: int | None = None  # emit `up`: 1 before this step, 0 from it on


@dataclass
class Scenario:
    comment: str
    steps: int
    limits: dict[str, int]  # role -> poolwatch_server_connections_max of every pool there
    instances: list[Instance]
    checks: list[str] = field(default_factory=list)  # YAML of promql/alert tests, pre-indented


def values(inst: Instance, value: int, steps: int) -> str:
    """promtool's notation: absent before start, `value` until end, then stale or nothing."""
    end = steps if inst.end is None else inst.end
    parts = [f"_x{inst.start}"] if inst.start else []
    parts.append(f"{value}x{end - inst.start - 1}")
    if inst.end is not None and inst.stale:
        parts.append("stale")
    return " ".join(parts)


def labels(inst: Instance, pool: Pool) -> str:
    return (f'job="{inst.job}",instance="{inst.name}:9464",'
            f'db_client_connection_pool_name="{pool.name}",role="{pool.role}"')


def input_series(sc: Scenario) -> list[str]:
    out = []
    for inst in sc.instances:
        if inst.up_until is not None:
            up = f"1x{inst.up_until - 1} 0x{sc.steps - inst.up_until - 1}"
            out += [f"      - series: 'up{{job=\"{inst.job}\",instance=\"{inst.name}:9464\"}}'",
                    f"        values: '{up}'"]
        for pool in inst.pools:
            lb = labels(inst, pool)
            info = (f'{lb},pool_class="QueuePool",pool_size="{pool.max - 1}",max_overflow="1",'
                    f'server_address="{SERVERS[pool.role]}",server_port="5432",db_namespace="shop"')
            for name, value in (
                (f'db_client_connection_count{{{lb},db_client_connection_state="used"}}',
                 min(1, pool.open)),
                (f'db_client_connection_count{{{lb},db_client_connection_state="idle"}}',
                 pool.open - min(1, pool.open)),
                (f"db_client_connection_max{{{lb}}}", pool.max),
                (f"poolwatch_server_connections_max{{{lb}}}", sc.limits[pool.role]),
                (f"poolwatch_pool_info{{{info}}}", 1),
            ):
                out += [f"      - series: '{name}'",
                        f"        values: '{values(inst, value, sc.steps)}'"]
    return out


def fleet(name: str = "", opens: dict[str, int] | None = None) -> list[Instance]:
    """The standard fleet; `opens` sets each pool's open connections (default: all of max)."""
    opens = opens or {}

    def pools(*spec: tuple[str, str, int]) -> list[Pool]:
        return [Pool(n, r, m, opens.get(n, m)) for n, r, m in spec]

    return ([Instance("api", f"api-{name}{i:02}", pools(("orders", "primary", 3),
                                                         ("orders-ro", "replica", 3)))
             for i in range(60)]
            + [Instance("worker", f"worker-{i:02}", pools(("jobs", "primary", 2)))
               for i in range(30)]
            + [Instance("reports", f"reports-{i:02}", pools(("reports", "replica", 5)))
               for i in range(12)])


def expr(e: str, at: str, samples: list[tuple[str, float]]) -> str:
    lines = [f"      - expr: '{e}'", f"        eval_time: {at}"]
    if not samples:
        return "\n".join([*lines, "        exp_samples: []"])
    lines.append("        exp_samples:")
    for lb, v in samples:
        lines += [f"          - labels: '{lb}'", f"            value: {v}"]
    return "\n".join(lines)


def per_server(metric: str, primary: float, replica: float) -> list[tuple[str, float]]:
    return [(f'{metric}{{server_address="db-primary",server_port="5432"}}', primary),
            (f'{metric}{{server_address="db-replica",server_port="5432"}}', replica)]


def alert(name: str, at: str, fired: list[tuple[str, str]]) -> str:
    """fired: (role, description) of each expected alert, all for `name`."""
    lines = [f"      - eval_time: {at}", f"        alertname: {name}"]
    if not fired:
        return "\n".join([*lines, "        exp_alerts: []"])
    lines.append("        exp_alerts:")
    severity = {"DBConnectionBudgetExceeded": "warning",
                "DBServerConnectionsNearLimit": "critical"}[name]
    summary = {
        "DBConnectionBudgetExceeded":
            "Pools on {s}:5432 may open more connections than the server allows",
        "DBServerConnectionsNearLimit": "{s}:5432 is nearly out of connections"}[name]
    for role, description in fired:
        server = SERVERS[role]
        lines += [
            f"          - exp_labels: {{severity: {severity}, server_address: {server}, "
            f"server_port: \"5432\", role: {role}}}",
            "            exp_annotations:",
            f'              summary: "{summary.format(s=server)}"',
            f'              description: "{description}"',
            f'              runbook_url: "{RUNBOOK}{name.lower()}"',
        ]
    return "\n".join(lines)


def budget(role: str, demand: int, limit: int, share: str) -> tuple[str, str]:
    return role, (f"The pools of every instance connected to {SERVERS[role]}:5432 (role {role}) "
                  f"may together open {demand} connections; the server allows them {limit} "
                  f"({share} of its limit). The next burst, scale-out or rolling deploy can "
                  "exhaust it.")


def near(role: str, open_: int, limit: int, share: str) -> tuple[str, str]:
    return role, (f"The pools connected to {SERVERS[role]}:5432 (role {role}) hold {open_} open "
                  f"connections, {share} of the {limit} the server allows them.")


DEMAND = "poolwatch:server_connection_demand:sum"
OPEN = "poolwatch:server_connections_open:sum"
LIMIT = "poolwatch:server_connections_max:min"
# docs/runbooks.md, "How many instances fit": more instances of each service the limit allows.
FIT = ("floor((poolwatch:server_connections_max:min - poolwatch:server_connection_demand:sum) "
       "/ on (server_address, server_port) group_right max by (server_address, server_port, job) "
       "(instance:poolwatch_server_connection_demand:sum))")


def scenarios() -> list[Scenario]:
    out = []

    # A. Just under and just over, and a primary and a replica with different limits. If the
    # two servers were added up (480 against 480 or 239) both would look alike.
    out.append(Scenario(
        "A. Demand 240 on each server: the primary allows 241 (just under, silent), the replica\n"
        "allows 239 (just over: the budget alert fires after 10m). Open connections are 2 of\n"
        "every 3 (api) and all of the rest: 180 and 180, well under 90 %.",
        steps=26, limits={"primary": 241, "replica": 239},
        instances=fleet(opens={"orders": 2, "orders-ro": 2}),
        checks=[
            expr(DEMAND, "5m", per_server(DEMAND, 240, 240)),
            expr(LIMIT, "5m", per_server(LIMIT, 241, 239)),
            expr(OPEN, "5m", per_server(OPEN, 180, 180)),
            expr("poolwatch:server_role:group", "5m", [
                ('poolwatch:server_role:group{server_address="db-primary",server_port="5432",'
                 'role="primary"}', 1),
                ('poolwatch:server_role:group{server_address="db-replica",server_port="5432",'
                 'role="replica"}', 1)]),
            alert("DBConnectionBudgetExceeded", "9m30s", []),
            alert("DBConnectionBudgetExceeded", "10m",
                  [budget("replica", 240, 239, "100.4%")]),
            alert("DBConnectionBudgetExceeded", "12m",
                  [budget("replica", 240, 239, "100.4%")]),
            alert("DBServerConnectionsNearLimit", "12m", []),
        ]))

    # B. Open connections near the limit: 235 of 260 on the primary (90.4 %, fires after 5m)
    # and 234 of 260 on the replica (exactly 90 %, silent). Demand 240 < 260: no budget alert.
    b = fleet()
    for inst in b[60:65]:  # five workers hold 1 connection instead of 2
        inst.pools[0].open = 1
    for inst in b[90:96]:  # six reports instances hold 4 instead of 5
        inst.pools[0].open = 4
    out.append(Scenario(
        "B. Limits 260 and 260, demand 240 and 240 (under). Open: primary 180 + 25*2 + 5*1 = 235\n"
        "(90.4 %: DBServerConnectionsNearLimit fires after 5m), replica 180 + 6*5 + 6*4 = 234\n"
        "(exactly 90 %: silent). The runbook's how-many-fit query: (260 - 240) / 3 = 6 more api\n"
        "instances, / 2 = 10 more workers, / 5 = 4 more reports instances.",
        steps=22, limits={"primary": 260, "replica": 260}, instances=b,
        checks=[
            expr(OPEN, "1m", per_server(OPEN, 235, 234)),
            expr(FIT, "1m", [
                ('{server_address="db-primary",server_port="5432",job="api"}', 6),
                ('{server_address="db-primary",server_port="5432",job="worker"}', 10),
                ('{server_address="db-replica",server_port="5432",job="api"}', 6),
                ('{server_address="db-replica",server_port="5432",job="reports"}', 4)]),
            alert("DBServerConnectionsNearLimit", "4m30s", []),
            alert("DBServerConnectionsNearLimit", "5m",
                  [near("primary", 235, 260, "90.38%")]),
            alert("DBServerConnectionsNearLimit", "7m",
                  [near("primary", 235, 260, "90.38%")]),
            alert("DBConnectionBudgetExceeded", "7m", []),
        ]))

    # C. An instance that goes away stops counting at once.
    c = fleet(opens={"orders": 3, "orders-ro": 2})
    gone, down = c[60], c[0]  # a worker exits; an api instance goes down unseen
    gone.end = 9  # t=4m30s
    down.end, down.stale, down.up_until = 9, False, 9
    for inst in c[78:90]:  # open on the primary: 180 + 18*2 + 12*0 = 216 of 239
        inst.pools[0].open = 0
    out.append(Scenario(
        "C. Limits 239 and 239, demand 240 and 240 (over by one: budget pending), open on the\n"
        "primary 180 + 18*2 = 216 (90.4 %: near-limit pending), on the replica 120 + 60 = 180.\n"
        "At t=4m30s worker-00 (2 connections) exits, its series marked stale, and api-00 (3 on\n"
        "the primary, 2 on the replica) goes down without staleness markers (up 0; its last\n"
        "samples would stay visible for 5 minutes). Both stop counting at that very evaluation:\n"
        "demand 235 and 237, open 211 (88.3 %) and 178, and neither alert ever fires.",
        steps=22, limits={"primary": 239, "replica": 239}, instances=c,
        checks=[
            expr(DEMAND, "4m", per_server(DEMAND, 240, 240)),
            expr(OPEN, "4m", per_server(OPEN, 216, 180)),
            expr(DEMAND, "4m30s", per_server(DEMAND, 235, 237)),
            expr(OPEN, "4m30s", per_server(OPEN, 211, 178)),
            alert("DBServerConnectionsNearLimit", "5m", []),
            alert("DBServerConnectionsNearLimit", "10m", []),
            alert("DBConnectionBudgetExceeded", "10m", []),
            alert("DBConnectionBudgetExceeded", "10m30s", []),
        ]))

    # D. Rolling deploys. api is replaced 15 instances at a time: each batch of new instances
    # starts one minute before the batch of old ones it replaces exits, so 15 extra instances
    # overlap from t=2m to t=6m. reports is also redeployed but the rollout sticks: its 12 new
    # instances start at t=2m and the old ones never leave.
    old = fleet(name="old", opens={"orders": 3, "orders-ro": 1})
    new = fleet(name="new", opens={"orders": 3, "orders-ro": 1})[:60]
    for k in range(4):
        for inst in old[15 * k: 15 * (k + 1)]:
            inst.end = (3 + k) * 60 // STEP
        for inst in new[15 * k: 15 * (k + 1)]:
            inst.start = (2 + k) * 60 // STEP
    for inst in old[60:80]:  # 10 of the 30 workers hold a connection
        inst.pools[0].open = 0
    for inst in old[80:90]:
        inst.pools[0].open = 1
    for inst in old[90:102]:  # old reports hold 2 each
        inst.pools[0].open = 2
    stuck = [Instance("reports", f"reports-new-{i:02}", [Pool("reports", "replica", 5, 2)],
                      start=2 * 60 // STEP) for i in range(12)]
    out.append(Scenario(
        "D. Limits 250 and 250. Before: demand 240 and 240, open 180 + 10 = 190 (76 %) and\n"
        "60 + 24 = 84. While 15 extra api instances overlap (2m..6m, 4 minutes): primary demand\n"
        "240 + 45 = 285 (over), open 190 + 45 = 235 (94 %): both alerts go pending and neither\n"
        "fires (`for` 10m and 5m); from 6m the primary is back to 240 and 190. On the replica,\n"
        "the stuck reports rollout adds 12*5 = 60 for good from t=2m: demand 240 + 45 + 60 = 345\n"
        "during the overlap, then 300 over 250: the budget alert fires at 12m (pending since 2m).",
        steps=25, limits={"primary": 250, "replica": 250}, instances=old + new + stuck,
        checks=[
            expr(DEMAND, "1m30s", per_server(DEMAND, 240, 240)),
            expr(OPEN, "1m30s", per_server(OPEN, 190, 84)),
            expr(DEMAND, "4m", per_server(DEMAND, 285, 345)),
            expr(OPEN, "4m", per_server(OPEN, 235, 123)),
            expr(DEMAND, "6m", per_server(DEMAND, 240, 300)),
            expr(OPEN, "6m", per_server(OPEN, 190, 108)),
            alert("DBServerConnectionsNearLimit", "5m30s", []),
            alert("DBServerConnectionsNearLimit", "6m", []),
            alert("DBConnectionBudgetExceeded", "11m30s", []),
            alert("DBConnectionBudgetExceeded", "12m", [budget("replica", 300, 250, "120%")]),
            alert("DBServerConnectionsNearLimit", "12m", []),
        ]))
    return out


def render() -> str:
    out = [
        "# Generated by generate_fleet.py (edit that, then run it). promtool tests of the",
        "# per-server rules and alerts over synthetic fleets of 102 instances of 3 services on 2",
        "# servers: demand just under and just over the limit, open connections near it, a",
        "# primary and a replica with different limits, instances that go away, rolling deploys.",
        "rule_files:",
        "  - ../poolwatch.rules.yml",
        f"evaluation_interval: {STEP}s",
        "",
        "tests:",
    ]
    for sc in scenarios():
        out += [f"  # {line}".rstrip() for line in sc.comment.split("\n")]
        out += [f"  - interval: {STEP}s", "    input_series:", *input_series(sc)]
        promql = [c for c in sc.checks if c.startswith("      - expr:")]
        alerts = [c for c in sc.checks if not c.startswith("      - expr:")]
        out += ["    promql_expr_test:", *promql, "    alert_rule_test:", *alerts, ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        return 0 if OUT.exists() and OUT.read_text() == text else 1
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
