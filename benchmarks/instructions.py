"""Instructions per operation under valgrind's callgrind: a noise-free view of the hot path.

    python benchmarks/instructions.py [--workload select1_sqlite] [--configs bare,pw,...] [-n 2000]

Wall-clock ratios on a shared VM move by several percent from run to run (see
docs/performance.md, "Run-to-run variation"); instruction counts do not. Each configuration runs
in its own process under ``valgrind --tool=callgrind`` with collection switched on only around
the measured loop (after set-up and a warm-up of 300 operations, garbage collector off), and the
count is divided by the number of operations. The same code gives the same count to within about
1 %, whatever else the machine is doing, so a change to the hot path of a few hundred
instructions shows. Instructions are not time (cache misses, system calls and the server are not
in them): this is the tool for comparing two versions of poolwatch, not for judging the budget.
Compare within one checkout: the ``bare`` count has been seen to differ between two checkouts of
the same code (272 k vs 290 k instructions per SQLite ``SELECT 1``, each exactly repeatable), for
a reason not yet found.

Needs valgrind on PATH; PostgreSQL workloads need the server (``$POOLWATCH_BENCH_PG``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from _harness import BENCH_DIR, CONFIG_HELP, pg_url, worker_env, write_json

WORKLOADS = ("connect_pass", "select1_sqlite", "select1_pg", "contention_pg")
DEFAULT_CONFIGS = ("bare", "pw_null", "pw_pool", "pw", "pw_trace", "otel")

# Runs inside valgrind: set up, warm up, then count only inside functools.reduce (a C function
# nothing else calls in the measured window), which calls the measured loop once.
_CHILD = """
import functools, gc, json, sys
sys.path.insert(0, {bench!r})
import _workloads as wl
spec = json.loads(sys.argv[1])
engine, run = wl.WORKLOADS[spec["workload"]](spec["params"])
applied = wl.apply_config(engine, spec["config"])
run(300)
gc.collect()
gc.disable()
functools.reduce(lambda a, b: run(spec["n"]), [0, 0])
"""

_COLLECTED = re.compile(r"Collected : (\d+)")


def count(workload: str, config: str, n: int, params: dict[str, Any]) -> int:
    with tempfile.TemporaryDirectory(prefix="poolwatch-ir-") as tmp:
        script = os.path.join(tmp, "child.py")
        with open(script, "w") as f:
            f.write(_CHILD.format(bench=str(BENCH_DIR)))
        spec = {"workload": workload, "config": config, "n": n, "params": params}
        env = worker_env()
        env["PYTHONHASHSEED"] = "0"
        command = [
            "valgrind", "--tool=callgrind", "--collect-atstart=no",
            "--toggle-collect=functools_reduce",
            f"--callgrind-out-file={os.path.join(tmp, 'callgrind.out')}",
            sys.executable, script, json.dumps(spec),
        ]  # fmt: skip
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
        )
        found = _COLLECTED.findall(proc.stderr)
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"{config}: valgrind failed (exit {proc.returncode}):\n{proc.stderr}")
        return int(found[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="select1_sqlite", choices=WORKLOADS)
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    p.add_argument("-n", "--ops", type=int, default=2000)
    p.add_argument("--quick", action="store_true", help="200 operations, to prove it runs")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("instructions.py needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIG_HELP]
    if unknown:
        p.error(f"unknown configuration(s) {unknown}; known: {sorted(CONFIG_HELP)}")
    n = 200 if args.quick else args.ops
    params: dict[str, Any] = {"threads": 32, "pool_size": 5}
    if args.workload.endswith("_pg"):
        params["url"] = pg_url()
    results: dict[str, float] = {}
    for config in configs:
        results[config] = count(args.workload, config, n, params) / n
    base = results.get("bare")
    print(f"{args.workload}: instructions per operation ({n} operations, callgrind)")
    print(f"  {'config':<10}{'instructions':>14}{'vs bare':>10}{'added':>10}")
    for config, ir in results.items():
        ratio = f"{ir / base:.3f}x" if base else "-"
        added = f"{ir - base:+,.0f}" if base else "-"
        print(f"  {config:<10}{ir:>14,.0f}{ratio:>10}{added:>10}")
    write_json(args.json, {"workload": args.workload, "ops": n, "instructions_per_op": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
