"""Run the whole benchmark suite and print the performance budget with PASS/FAIL per row.

    python benchmarks/run_all.py            # full run, about 10 minutes on 2 cores
    python benchmarks/run_all.py --quick    # smoke run for CI, under a minute, timings meaningless

Every benchmark runs as its own subprocess (``benchmarks/<name>.py --json ...``) with a time
limit; this script only collects their JSON and judges the budget.

Exit status:
  --quick: 0 unless a benchmark crashed or hung, or the 1,000-engine check found survivors
           (timings never fail a quick run).
  full:    additionally 1 if any budget row FAILs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _harness import BENCH_DIR, REPO, fmt_time, machine_info, poolwatch_importable, worker_env

# ---------------------------------------------------------------------------------------------
# the budget (issue #5)

#: workload -> (what, poolwatch/bare limit)
OVERHEAD_BUDGET = {
    "connect_pass": ("connect:pass, SQLite QueuePool", 1.35),
    "select1_sqlite": ("SELECT 1, SQLite (pool + statement metrics)", 1.20),
    "select1_pg": ("SELECT 1, PostgreSQL loopback", 1.05),
    "contention_pg": ("32 threads / pool of 5, PostgreSQL, 6,400 queries", 1.03),
    # psycopg_pool (issue #19): against the bare pool; OpenTelemetry's psycopg instrumentation
    # alone is the comparison row (info:otel:*).
    "pgpool_connect_pass": ("psycopg_pool: connection(): pass, PostgreSQL", 1.10),
    "pgpool_select1": ("psycopg_pool: SELECT 1, PostgreSQL loopback", 1.05),
    "pgpool_contention": ("psycopg_pool: 32 threads / max_size=5, 6,400 queries", 1.03),
    "pgpool_async_select1": ("psycopg_pool async: SELECT 1, PostgreSQL loopback", 1.05),
}
#: Workloads with a tracing-vs-OpenTelemetry row (poolwatch's SQLAlchemy statement spans).
TRACED = ("connect_pass", "select1_sqlite", "select1_pg", "contention_pg")
#: "clearly cheaper" than the OpenTelemetry SQLAlchemy instrumentation alone: at most this
#: fraction of its time on the same workload (median of per-round pw_trace/otel ratios).
TRACING_VS_OTEL = 0.90
SCRAPE_BUDGET_MS = 50.0
#: Bytes a dropped instrumented engine may leave held (tracemalloc, after a scrape).
ENGINE_HELD_BYTES = 8192

#: (name, script, extra args full, extra args quick, timeout full s, timeout quick s)
STEPS: list[tuple[str, str, list[str], list[str], float, float]] = [
    ("connect_pass", "connect_pass.py", [], [], 600, 40),
    ("select1_sqlite", "select1_sqlite.py", [], [], 600, 40),
    ("select1_pg", "select1_pg.py", [], [], 900, 40),
    ("contention_pg", "contention_pg.py", [], [], 1800, 60),
    ("pgpool_connect_pass", "pgpool_connect_pass.py", [], [], 900, 60),
    ("pgpool_select1", "pgpool_select1.py", [], [], 900, 60),
    ("pgpool_contention", "pgpool_contention.py", [], [], 1800, 90),
    ("pgpool_async_select1", "pgpool_async_select1.py", [], [], 900, 60),
    ("scrape", "scrape.py", [], [], 300, 60),
    ("memory", "memory.py", [], [], 300, 40),
    # The three variants take ~20 s on a busy 2-core VM; the watchdog catches hangs, not slowness.
    ("engine_leak", "engine_leak.py", ["--timeout", "120"], ["--timeout", "90"], 300, 120),
    ("floor", "floor.py", [], [], 600, 40),
]


@dataclass
class StepResult:
    name: str
    status: str  # ok | crashed | hung | skipped
    seconds: float
    data: dict[str, Any] | None
    output: str
    returncode: int | None


def run_step(
    name: str, script: str, extra: list[str], timeout: float, quick: bool, tmp: Path, verbose: bool
) -> StepResult:
    out_json = tmp / f"{name}.json"
    cmd = [sys.executable, str(BENCH_DIR / script), "--json", str(out_json), *extra]
    if quick:
        cmd.append("--quick")
    print(
        f"== {name}: {' '.join(Path(c).name if c.endswith('.py') else c for c in cmd[1:])}",
        flush=True,
    )
    t0 = time.perf_counter()
    log = tmp / f"{name}.log"
    with log.open("w") as f:
        try:
            proc = subprocess.run(
                cmd,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=worker_env(),
                cwd=str(REPO),
                timeout=timeout,
            )
            rc: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    seconds = time.perf_counter() - t0
    output = log.read_text()
    data = None
    if out_json.exists():
        try:
            data = json.loads(out_json.read_text())
        except ValueError:
            data = None
    if rc is None:
        status = "hung"
    elif name == "engine_leak" and rc == 3:
        status = "hung"
    elif name == "engine_leak" and rc == 1 and data is not None:
        status = "ok"  # survivors: judged as a FAIL row below, not a crash
    elif rc != 0 or data is None:
        status = "crashed"
    elif data.get("skipped"):
        status = "skipped"
    else:
        status = "ok"
    shown = [line for line in output.splitlines() if not line.lstrip().startswith("[")]
    if verbose or status != "ok":
        print("\n".join("   " + line for line in shown[-40:]))
    print(f"   -> {status} in {seconds:.1f} s", flush=True)
    return StepResult(name, status, seconds, data, output, rc)


# ---------------------------------------------------------------------------------------------
# judging


@dataclass
class Row:
    key: str
    what: str
    measured: str
    ratio: str
    ci: str
    limit: str
    verdict: str  # PASS | FAIL | INFO | SKIP | ERROR


def _cfg(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    return (data.get("configs") or {}).get(name)


def _ratio_rows(step: StepResult, ratio_of: str, base: str) -> tuple[float, tuple[float, float]]:
    assert step.data is not None
    a = _cfg(step.data, ratio_of)["ns_per_op_rounds"]  # type: ignore[index]
    b = _cfg(step.data, base)["ns_per_op_rounds"]  # type: ignore[index]
    from _harness import bootstrap_median_ci, median

    rs = [x / y for x, y in zip(a, b, strict=True)]
    return median(rs), bootstrap_median_ci(rs, step.data.get("round_process") or None)


def signed(ns: float) -> str:
    return ("+" if ns >= 0 else "") + fmt_time(ns)


def judge(steps: dict[str, StepResult]) -> list[Row]:
    rows: list[Row] = []

    def unavailable(key: str, what: str, limit: str, step: StepResult | None) -> Row:
        if step is None:
            return Row(key, what, "-", "-", "-", limit, "SKIP")
        if step.status == "skipped":
            reason = (step.data or {}).get("skipped", "")
            return Row(key, what, f"skipped: {reason[:40]}", "-", "-", limit, "SKIP")
        return Row(key, what, step.status, "-", "-", limit, "ERROR")

    # poolwatch (metrics only) vs bare
    for wl, (what, limit) in OVERHEAD_BUDGET.items():
        st, key = steps.get(wl), f"budget:{wl}"
        lim = f"<= {limit:.2f}x"
        if st is None or st.status != "ok" or not _cfg(st.data or {}, "pw"):
            rows.append(unavailable(key, what, lim, st))
            continue
        r, (lo, hi) = _ratio_rows(st, "pw", "bare")
        bare, pw = _cfg(st.data, "bare"), _cfg(st.data, "pw")  # type: ignore[arg-type]
        aa = _cfg(st.data, "bare_aa")  # type: ignore[arg-type]
        noise = f"; A/A {aa['ratio_to_bare_median']:.3f}x" if aa else ""
        rows.append(
            Row(
                key,
                what,
                f"{fmt_time(pw['median_ns_per_op'])} vs {fmt_time(bare['median_ns_per_op'])}{noise}",
                f"{r:.3f}x",
                f"{lo:.3f}-{hi:.3f}",
                lim,
                "PASS" if r <= limit else "FAIL",
            )
        )

    # scrape: prometheus_client's exposition, and poolwatch's own (what its exporter serves)
    st = steps.get("scrape")
    lim = f"< {SCRAPE_BUDGET_MS:.0f} ms"
    # The budget row is the scrape poolwatch serves (its exporter, or its generate_latest in an
    # application's own /metrics view); prometheus_client's exposition of the same registry is
    # shown for comparison, as information.
    whats = {
        "prometheus_client": "scrape via prometheus_client.generate_latest (for comparison)",
        "poolwatch": "scrape: poolwatch /metrics exposition, 20 pools x 100 summaries",
    }
    for which, what in whats.items():
        key = f"budget:scrape:{which}"
        if st is None or st.status != "ok":
            rows.append(unavailable(key, what, lim, st))
            continue
        d = st.data or {}
        e = d if which == "prometheus_client" else d.get("poolwatch_exposition")
        if not e:
            rows.append(Row(key, what, "not available", "-", "-", lim, "SKIP"))
            continue
        ms = e["median_ns"] / 1e6
        note = f"{d['samples']} samples, {d['exposition_bytes'] // 1024} KiB"
        if which == "poolwatch" and e.get("same_series_as_prometheus_client") is False:
            note = "series differ from prometheus_client's!"
        rows.append(
            Row(
                key,
                what,
                f"{ms:.1f} ms ({note})",
                f"{ms / SCRAPE_BUDGET_MS:.2f}x of budget",
                f"{e['min_ns'] / 1e6:.1f}-{e['max_ns'] / 1e6:.1f} ms",
                lim if which == "poolwatch" else "-",
                ("PASS" if ms < SCRAPE_BUDGET_MS else "FAIL") if which == "poolwatch" else "INFO",
            )
        )

    # tracing vs OpenTelemetry's instrumentation alone
    for wl, (what, _) in OVERHEAD_BUDGET.items():
        if wl not in TRACED:
            continue
        st, key = steps.get(wl), f"tracing:{wl}"
        lim = f"<= {TRACING_VS_OTEL:.2f}x OTel"
        what_t = f"tracing on vs OTel alone: {what.split(',')[0]}" + (
            ", PG" if wl.endswith("_pg") else ", SQLite"
        )
        if (
            st is None
            or st.status != "ok"
            or not _cfg(st.data or {}, "pw_trace")
            or not _cfg(st.data or {}, "otel")
        ):
            rows.append(unavailable(key, what_t, lim, st))
            continue
        r, (lo, hi) = _ratio_rows(st, "pw_trace", "otel")
        t, o = _cfg(st.data, "pw_trace"), _cfg(st.data, "otel")  # type: ignore[arg-type]
        rows.append(
            Row(
                key,
                what_t,
                f"{fmt_time(t['median_ns_per_op'])} vs OTel {fmt_time(o['median_ns_per_op'])} "
                f"(bare x{t['ratio_to_bare_median']:.2f} vs x{o['ratio_to_bare_median']:.2f})",
                f"{r:.3f}x",
                f"{lo:.3f}-{hi:.3f}",
                lim,
                "PASS" if r <= TRACING_VS_OTEL else "FAIL",
            )
        )

    # engines left alive
    st = steps.get("engine_leak")
    what = "1,000 engines instrumented + disposed: alive, held"
    if st is None or st.status != "ok":
        rows.append(unavailable("check:engine_leak", what, "0", st))
    else:
        d = {k: v for k, v in (st.data or {}).items() if k != "bare"}
        alive = sum(v["alive_engines"] + v["alive_pools"] for v in d.values())
        # What a dropped engine leaves behind (bare: ~300 B of SQLAlchemy's own): an engine per
        # tenant or job must not grow the process by a pool's trackers (~34 KiB) each time.
        held = max(v.get("bytes_held_per_engine", 0) for v in d.values())
        detail = "; ".join(
            f"{k}: {v['alive_engines']} engines, {v['alive_pools']} pools,"
            f" {v.get('bytes_held_per_engine', 0)} B held each"
            for k, v in d.items()
        )
        ok = alive == 0 and held <= ENGINE_HELD_BYTES
        rows.append(
            Row("check:engine_leak", what, detail, "-", "-",
                f"0 alive, <= {ENGINE_HELD_BYTES} B held", "PASS" if ok else "FAIL")
        )  # fmt: skip

    # information: OpenTelemetry's psycopg instrumentation alone vs the bare pool
    for wl, (what, _) in OVERHEAD_BUDGET.items():
        st = steps.get(wl)
        if wl in TRACED or st is None or st.status != "ok" or not _cfg(st.data or {}, "otel"):
            continue
        r, (lo, hi) = _ratio_rows(st, "otel", "bare")
        rows.append(
            Row(
                f"info:otel:{wl}",
                f"OpenTelemetry psycopg instrumentation alone: {what}",
                fmt_time(_cfg(st.data, "otel")["median_ns_per_op"]),  # type: ignore
                f"{r:.3f}x",
                f"{lo:.3f}-{hi:.3f}",
                "-",
                "INFO",
            )
        )

    # information: leak detection on, memory per pool
    for wl, (what, _) in OVERHEAD_BUDGET.items():
        st = steps.get(wl)
        if st is None or st.status != "ok" or not _cfg(st.data or {}, "pw_leak"):
            continue
        r, (lo, hi) = _ratio_rows(st, "pw_leak", "bare")
        rows.append(
            Row(
                f"info:leak:{wl}",
                f"leak_threshold=1.0: {what}",
                fmt_time(_cfg(st.data, "pw_leak")["median_ns_per_op"]),  # type: ignore
                f"{r:.3f}x",
                f"{lo:.3f}-{hi:.3f}",
                "-",
                "INFO",
            )
        )
    st = steps.get("memory")
    if st is not None and st.status == "ok" and st.data:
        rows.append(
            Row(
                "info:memory",
                "memory per instrumented pool (tracemalloc)",
                f"{st.data['bytes_per_pool_after_instrument'] / 1024:.1f} KiB after "
                f"instrument(), {st.data['bytes_per_pool_after_first_use'] / 1024:.1f} KiB "
                "after first use",
                "-",
                "-",
                "-",
                "INFO",
            )
        )
    elif st is not None:
        rows.append(unavailable("info:memory", "memory per instrumented pool", "-", st))
    st = steps.get("floor")
    if st is not None and st.status == "ok" and st.data:
        m, added = st.data["micro_ns"], st.data["seam_added_ns"]
        rows.append(
            Row(
                "info:floor",
                "floor: perf_counter pair / Histogram.observe / Gauge.inc",
                f"{m['perf_counter() pair']:.0f} / "
                f"{m['Histogram.observe (resolved child, 9 buckets)']:.0f} / "
                f"{m['Gauge.inc (no labels)']:.0f} ns",
                "-",
                "-",
                "-",
                "INFO",
            )
        )
        rows.append(
            Row(
                "info:seam",
                "floor: no-op cursor listener / do_execute wrap, SELECT 1",
                f"{signed(added['noop_cursor'])} / {signed(added['noop_dialect_wrap'])}",
                "-",
                "-",
                "-",
                "INFO",
            )
        )
    elif st is not None:
        rows.append(unavailable("info:floor", "floor micro-timings", "-", st))
    return rows


def render(rows: list[Row], markdown: bool = False) -> str:
    head = ("budget row", "measured (poolwatch vs base)", "ratio", "95% CI", "limit", "verdict")
    body = [(r.what, r.measured, r.ratio, r.ci, r.limit, r.verdict) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in b) + " |" for b in body]
        return "\n".join(lines)
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*b) for b in body]
    return "\n".join(lines)


def load_json(path: str) -> tuple[dict[str, Any], dict[str, StepResult], float, bool]:
    raw = json.loads(Path(path).read_text())
    steps = {
        k: StepResult(k, v["status"], v["seconds"], v["data"], "", v["returncode"])
        for k, v in raw["steps"].items()
    }
    return raw["machine"], steps, raw["seconds"], raw["quick"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny counts, for CI (< 60 s)")
    p.add_argument("--only", help="comma-separated subset of: " + ", ".join(s[0] for s in STEPS))
    p.add_argument("--json", metavar="PATH", help="write every result and the verdicts as JSON")
    p.add_argument(
        "--markdown", action="store_true", help="print the budget table as Markdown (to paste)"
    )
    p.add_argument(
        "--from-json", metavar="PATH", help="do not run: judge and render a saved --json file"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show each benchmark's output")
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    only = set(args.only.split(",")) if args.only else None
    if args.from_json:
        info, steps, total, quick = load_json(args.from_json)
        args.quick = quick
    else:
        ok, where = poolwatch_importable()
        if not ok:
            print(
                f"poolwatch is not importable: {where}\n(install it: pip install -e .)",
                file=sys.stderr,
            )
            return 2
        info = machine_info()
        info["loadavg_start"] = os.getloadavg()
        info["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
        pk = info.get("packages", {})
        print(
            f"machine: {info['nproc']} cores, {info.get('cpu_model', '?')}, "
            f"Python {info['python']}, SQLAlchemy {pk.get('SQLAlchemy')}, prometheus_client "
            f"{pk.get('prometheus_client')}, PostgreSQL {info['postgresql']}, "
            f"load {info['loadavg_start'][0]:.2f}"
        )
        print(f"poolwatch: {where}" + (" (QUICK: timings are meaningless)" if args.quick else ""))
        steps = {}
        with tempfile.TemporaryDirectory(prefix="poolwatch-bench-") as tmp:
            for name, script, full_extra, quick_extra, t_full, t_quick in STEPS:
                if only and name not in only:
                    continue
                steps[name] = run_step(
                    name,
                    script,
                    quick_extra if args.quick else full_extra,
                    t_quick if args.quick else t_full,
                    args.quick,
                    Path(tmp),
                    args.verbose,
                )
        info["loadavg_end"] = os.getloadavg()
        total = time.perf_counter() - t_start
    rows = judge(steps)
    if only:
        rows = [r for r in rows if r.key.split(":")[-1] in only or r.key.split(":")[1] in only]

    la0, la1 = info.get("loadavg_start", (0,)), info.get("loadavg_end", (0,))
    print()
    print(
        f"poolwatch performance budget ({'QUICK - not a measurement' if args.quick else 'full'} "
        f"run, {total:.0f} s, load {la0[0]:.2f} -> {la1[0]:.2f}):"
    )
    print(render(rows, markdown=args.markdown))

    broken = [s.name for s in steps.values() if s.status in ("crashed", "hung")]
    leak = [r for r in rows if r.key == "check:engine_leak" and r.verdict == "FAIL"]
    failed = [r for r in rows if r.verdict == "FAIL"]
    if args.json and not args.from_json:
        payload = {
            "quick": args.quick,
            "machine": info,
            "seconds": round(total, 1),
            "rows": [r.__dict__ for r in rows],
            "steps": {
                k: {
                    "status": v.status,
                    "seconds": round(v.seconds, 1),
                    "data": v.data,
                    "returncode": v.returncode,
                }
                for k, v in steps.items()
            },
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    if broken:
        print(f"\nERROR: benchmark(s) crashed or hung: {', '.join(broken)}")
    if leak:
        print("\nERROR: the 1,000-engine check found survivors")
    if broken or leak:
        return 1
    if failed and not args.quick:
        print(f"\n{len(failed)} budget row(s) FAIL")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
