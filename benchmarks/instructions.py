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

One count is exactly repeatable, but it belongs to one memory layout: where the interpreter's
objects land decides how often its dictionary and method-cache lookups collide, and the same code
was counted at 272 k, 278 k and 290 k instructions per SQLite ``SELECT 1`` in processes that
differed only in the path of the script they ran. The type attribute cache behaves alike: it is
indexed by each class's version tag, handed out in the order classes are first looked up, so one
class more or less (in poolwatch or anywhere) changes which lookups collide, and a count moved by
+1,800 instructions per SQLAlchemy checkout, all of it in CPython's dictionary and MRO lookups,
when poolwatch's own code had become 250 cheaper. So every configuration is counted in several
layouts (``--layouts``: each with a longer environment, more strings allocated and more classes
given a version tag before anything is imported, which moves everything after them) and the
median is reported with the range.

Needs valgrind on PATH; PostgreSQL workloads need the server (``$POOLWATCH_BENCH_PG``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from _harness import BENCH_DIR, CONFIG_HELP, pg_url, worker_env, write_json

WORKLOADS = (
    "connect_pass", "select1_sqlite", "select1_pg", "contention_pg",
    "pgpool_connect_pass", "pgpool_select1", "pgpool_contention", "pgpool_async_select1",
)  # fmt: skip
DEFAULT_CONFIGS = ("bare", "pw_null", "pw_pool", "pw", "pw_trace", "otel")

# Runs inside valgrind: set up, warm up, then count only inside functools.reduce (a C function
# nothing else calls in the measured window), which calls the measured loop once. Callgrind
# switches collection per thread, so threads started by the measured loop (the contention
# workload) run their own body inside functools.reduce too; the warm-up's threads do not.
_CHILD = """
import functools, gc, json, sys, threading
spec = json.loads(sys.argv[1])
# Shift where everything allocated from here on lands, and which type version tags the classes
# used from here on get (see the module docstring).
_layout = ["s%d" % i for i in range(spec["layout"] * 50)]
_tagged = [type("L%d" % i, (), dict()) for i in range(spec["layout"] * 7)]
for _t in _tagged:
    getattr(_t, "tag", None)  # the first lookup on a type assigns its version tag
sys.path.insert(0, {bench!r})
import _workloads as wl
measuring = False
_thread_run = threading.Thread.run
def _counted_run(self):
    if measuring:
        functools.reduce(lambda a, b: _thread_run(self), [0, 0])
    else:
        _thread_run(self)
threading.Thread.run = _counted_run
engine, run = wl.WORKLOADS[spec["workload"]](spec["params"])
applied = wl.apply_config(engine, spec["config"])
run(300)
gc.collect()
gc.disable()
measuring = True
functools.reduce(lambda a, b: run(spec["n"]), [0, 0])
"""

_COLLECTED = re.compile(r"Collected : (\d+)")


def count(
    workload: str,
    config: str,
    n: int,
    params: dict[str, Any],
    layout: int = 0,
    keep: str | None = None,
) -> int:
    with tempfile.TemporaryDirectory(prefix="poolwatch-ir-") as tmp:
        script = os.path.join(tmp, "child.py")
        with open(script, "w") as f:
            f.write(_CHILD.format(bench=str(BENCH_DIR)))
        spec = {"workload": workload, "config": config, "n": n, "params": params, "layout": layout}
        env = worker_env()
        env["PYTHONHASHSEED"] = "0"
        env["BENCH_LAYOUT_PAD"] = "x" * (37 * layout)
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
        if keep:
            os.makedirs(keep, exist_ok=True)
            shutil.copy(
                os.path.join(tmp, "callgrind.out"),
                os.path.join(keep, f"callgrind.{workload}.{config}.{layout}.out"),
            )
        return int(found[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="select1_sqlite", choices=WORKLOADS)
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    p.add_argument("-n", "--ops", type=int, default=2000)
    p.add_argument(
        "--layouts", type=int, default=5, help="memory layouts per configuration (median reported)"
    )
    p.add_argument(
        "--quick", action="store_true", help="200 operations in one layout, to prove it runs"
    )
    p.add_argument("--json", metavar="PATH")
    p.add_argument(
        "--keep",
        metavar="DIR",
        help="keep each callgrind output in DIR (for callgrind_annotate --inclusive=yes)",
    )
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
    if args.workload.endswith("_pg") or args.workload.startswith("pgpool_"):
        params["url"] = pg_url()
    layouts = 1 if args.quick else max(1, args.layouts)
    jobs = [(config, layout) for config in configs for layout in range(layouts)]
    # Counts do not depend on load, so the valgrind runs go in parallel, one per core.
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counted = list(
            pool.map(lambda j: count(args.workload, j[0], n, params, j[1], args.keep) / n, jobs)
        )
    per_layout: dict[str, list[float]] = {c: [] for c in configs}
    for (config, _), ir in zip(jobs, counted, strict=True):
        per_layout[config].append(ir)
    results = {c: statistics.median(v) for c, v in per_layout.items()}
    base = results.get("bare")
    print(
        f"{args.workload}: instructions per operation ({n} operations, callgrind, median of "
        f"{layouts} memory layout(s))"
    )
    print(f"  {'config':<10}{'instructions':>14}{'vs bare':>10}{'added':>10}{'range':>22}")
    for config, ir in results.items():
        ratio = f"{ir / base:.3f}x" if base else "-"
        added = f"{ir - base:+,.0f}" if base else "-"
        spread = f"{min(per_layout[config]):,.0f}-{max(per_layout[config]):,.0f}"
        print(f"  {config:<10}{ir:>14,.0f}{ratio:>10}{added:>10}{spread:>22}")
    write_json(
        args.json,
        {
            "workload": args.workload,
            "ops": n,
            "layouts": layouts,
            "instructions_per_op": results,
            "instructions_per_op_layouts": per_layout,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
