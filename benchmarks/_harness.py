"""Shared machinery for the poolwatch benchmarks.

The interleaved driver (:func:`run_interleaved`) starts one warm worker process per configuration
(``_worker.py``), then sends every worker "run round N" commands over a pipe. Rounds are interleaved
(every configuration runs once per round) and the configuration order is rotated each round, so slow
drift of the machine (thermal, other load, CPU frequency) hits every configuration alike. Results are
medians of the per-round times and medians of the per-round ratios to ``bare``.

Only the standard library is imported here, so the driver itself never loads SQLAlchemy,
OpenTelemetry or poolwatch; each worker imports what its configuration needs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORKER = BENCH_DIR / "_worker.py"

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

#: Every configuration the worker knows, in report order.
ALL_CONFIGS = ("bare", "pw", "pw_py", "pw_trace", "pw_leak", "otel", "bare_aa")
#: What each configuration means (printed in reports and docs).
CONFIG_HELP = {
    "bare": "plain SQLAlchemy, nothing attached",
    "bare_aa": "a second, identical bare worker (A/A control: its ratio to bare is the noise)",
    "bare_imported": "plain SQLAlchemy with poolwatch and prometheus_client imported, nothing "
    "attached: the cost of having the modules loaded, apart from the listeners'",
    "pw": "poolwatch.instrument(engine) - metrics on, tracing off, leak detection at its default",
    "pw_py": "as pw, with the interpreted hot path (POOLWATCH_PURE_PYTHON=1): poolwatch installed "
    "without its compiled extension",
    "pw_trace": "poolwatch metrics + tracing (SDK TracerProvider, counting span processor, no exporter)",
    "pw_leak": "poolwatch metrics with leak_threshold=1.0",
    "pw_mp": "as pw, in prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR set: the "
    "pre-fork backend, its sampler writing the files once a second)",
    "pw_pool": "poolwatch pool metrics only (statement_metrics=False), for attributing cost",
    "pw_null": "poolwatch's pool wrapper and listeners with no metrics backend (prometheus=False, "
    "statement_metrics=False), for attributing cost",
    "otel": "OpenTelemetry SQLAlchemyInstrumentor alone (same TracerProvider setup)",
    "noop_cursor": "a no-op before_cursor_execute + after_cursor_execute listener",
    "noop_do_execute": "a no-op DialectEvents.do_execute listener",
    "noop_dialect_wrap": "a pass-through wrapper on the dialect's do_execute (poolwatch's seam)",
    "noop_pool_wrap": "pass-through wrappers on the pool's connect and _return_conn (poolwatch's "
    "pool seams)",
}
POOLWATCH_CONFIGS = frozenset(
    {"pw", "pw_py", "pw_trace", "pw_leak", "pw_pool", "pw_null", "pw_mp"}
)


# ---------------------------------------------------------------------------------------------
# environment


def worker_env() -> dict[str, str]:
    """The environment for worker processes: no POOLWATCH_* / OTEL_* settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POOLWATCH_", "OTEL_"))}
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # Make the package importable from a checkout even when it is not installed.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "exporter"), str(BENCH_DIR), env.get("PYTHONPATH", "")) if p
    )
    env["OTEL_SDK_DISABLED"] = "false"
    return env


def default_cpu() -> int | None:
    """The core the benchmark client is pinned to: the last one we may run on (None: one core)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None
    return cpus[-1] if len(cpus) > 1 else None


def pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def pg_url() -> str:
    return os.environ.get("POOLWATCH_BENCH_PG", os.environ.get("POOLWATCH_TEST_PG", DEFAULT_PG_URL))


def pg_available(url: str | None = None) -> tuple[bool, str]:
    """(reachable, server version or the reason it is not)."""
    url = url or pg_url()
    try:
        import psycopg  # type: ignore[import-not-found]
    except ImportError as e:
        return False, f"psycopg not importable ({e})"
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return True, str(row[0]) if row else "?"
    except Exception as e:
        return False, f"{type(e).__name__}: {e}".strip()


def poolwatch_importable() -> tuple[bool, str]:
    """Whether ``import poolwatch; poolwatch.instrument`` works in a worker's environment."""
    r = subprocess.run(
        [sys.executable, "-c", "import poolwatch; poolwatch.instrument; print(poolwatch.__file__)"],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if r.returncode == 0:
        return True, r.stdout.strip()
    return False, (r.stderr.strip().splitlines() or ["?"])[-1]


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        info["mem_gib"] = round(kb / 1024 / 1024, 1)
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sqlalchemy, prometheus_client, importlib.metadata as m\n"
            "v = lambda d: (m.version(d) if d else None)\n"
            "out = {}\n"
            "for d in ('SQLAlchemy', 'prometheus_client', 'psycopg', 'opentelemetry-sdk',"
            " 'opentelemetry-instrumentation-sqlalchemy', 'poolwatch'):\n"
            "    try: out[d] = v(d)\n"
            "    except Exception: out[d] = None\n"
            "import sqlite3; out['sqlite'] = sqlite3.sqlite_version\n"
            "print(json.dumps(out))",
        ],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    with contextlib.suppress(ValueError):
        info["packages"] = json.loads(r.stdout)
    ok, ver = pg_available()
    info["postgresql"] = ver if ok else f"unavailable: {ver}"
    info["pg_url"] = pg_url().split("@")[-1]  # host:port/db only, never the user
    return info


# ---------------------------------------------------------------------------------------------
# statistics


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def quartiles(xs: Sequence[float]) -> tuple[float, float]:
    if len(xs) < 2:
        v = xs[0] if xs else float("nan")
        return v, v
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def bootstrap_median_ci(
    xs: Sequence[float],
    groups: Sequence[int] | None = None,
    resamples: int = 2000,
    seed: int = 12345,
) -> tuple[float, float]:
    """A 95 % percentile-bootstrap interval for the median of xs.

    With ``groups`` (the worker process generation of each round), whole generations are
    resampled: rounds run by the same pair of processes share that pair's offset, so they are
    not independent evidence, and resampling them one by one would make the interval too narrow.
    """
    if len(xs) < 3:
        return (min(xs), max(xs)) if xs else (float("nan"), float("nan"))
    rng = random.Random(seed)
    if groups is not None and len(set(groups)) >= 3:
        clusters: dict[int, list[float]] = {}
        for g, x in zip(groups, xs, strict=True):
            clusters.setdefault(g, []).append(x)
        blocks = list(clusters.values())
        meds = sorted(
            statistics.median([x for b in rng.choices(blocks, k=len(blocks)) for x in b])
            for _ in range(resamples)
        )
    else:
        meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(resamples))
    return meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1]


def fmt_time(ns: float) -> str:
    if ns != ns:  # NaN
        return "-"
    if ns < 0:
        return "-" + fmt_time(-ns)
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


# ---------------------------------------------------------------------------------------------
# worker processes


class WorkerError(RuntimeError):
    pass


class Worker:
    """One warm process running one workload under one configuration."""

    def __init__(
        self, workload: str, config: str, params: dict[str, Any], cpu: int | None, warmup: int
    ) -> None:
        self.workload, self.config = workload, config
        spec = {
            "workload": workload,
            "config": config,
            "params": params,
            "cpu": cpu,
            "warmup": warmup,
        }
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(WORKER), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=worker_env(),
            cwd=str(REPO),
        )
        self.ready: dict[str, Any] | None = None

    def _stderr_tail(self, lines: int = 25) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return "\n".join(self.stderr.read().splitlines()[-lines:])

    def _recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise WorkerError(
                f"worker {self.workload}/{self.config} died (exit {self.proc.returncode}):\n"
                f"{self._stderr_tail()}"
            )
        msg = json.loads(line)
        if msg.get("error"):
            raise WorkerError(
                f"worker {self.workload}/{self.config} failed: {msg['error']}\n"
                f"{msg.get('traceback', '')}"
            )
        return msg

    def _send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError as e:
            raise WorkerError(
                f"worker {self.workload}/{self.config} is gone:\n{self._stderr_tail()}"
            ) from e

    def wait_ready(self) -> dict[str, Any]:
        self.ready = self._recv()
        return self.ready

    def round(self, n: int) -> tuple[int, int]:
        """Run one round of n operations: (wall ns, process CPU ns, all threads)."""
        self._send({"cmd": "round", "n": n})
        msg = self._recv()
        return int(msg["ns"]), int(msg["cpu_ns"])

    def finish(self) -> dict[str, Any]:
        self._send({"cmd": "quit"})
        msg = self._recv()
        self.close()
        return msg

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.stderr.close()


@dataclass
class ConfigResult:
    config: str
    ns_per_op: list[float] = field(default_factory=list)  # wall time, one per round
    cpu_ns_per_op: list[float] = field(default_factory=list)  # process CPU time, one per round
    evidence: dict[str, Any] = field(default_factory=dict)
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def median_ns(self) -> float:
        return median(self.ns_per_op)


def merge_evidence(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's evidence over its successive worker processes: counts add up,
    per-operation figures are averaged, anything else is the last process's."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for p in parts for k in p):
        values = [p[key] for p in parts if key in p]
        if key.endswith("_per_op"):
            out[key] = round(sum(values) / len(values), 2)
        elif key in SUMMED_EVIDENCE:
            out[key] = sum(values)
        else:
            out[key] = values[-1]
    return out


SUMMED_EVIDENCE = frozenset({"histogram_observations", "spans", "listener_calls"})


@dataclass
class InterleavedResult:
    workload: str
    unit_ops: int  # operations per round
    rounds: int
    configs: dict[str, ConfigResult]
    params: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    # The worker process generation that ran each round (all configurations alike).
    round_process: list[int] = field(default_factory=list)

    @property
    def processes(self) -> int:
        return len(set(self.round_process)) or 1

    def ci(self, ratios: Sequence[float]) -> tuple[float, float]:
        return bootstrap_median_ci(ratios, self.round_process or None)

    def ratios(self, config: str, base: str = "bare") -> list[float]:
        a, b = self.configs[config].ns_per_op, self.configs[base].ns_per_op
        return [x / y for x, y in zip(a, b, strict=True)]

    def ratio(self, config: str, base: str = "bare") -> float:
        return median(self.ratios(config, base))

    def to_json(self) -> dict[str, Any]:
        out = {
            "workload": self.workload,
            "ops_per_round": self.unit_ops,
            "rounds": self.rounds,
            "processes": self.processes,
            "round_process": self.round_process,
            "params": self.params,
            "wall_s": round(self.wall_s, 2),
            "configs": {},
        }
        for name, c in self.configs.items():
            entry: dict[str, Any] = {
                "median_ns_per_op": c.median_ns,
                "ns_per_op_rounds": c.ns_per_op,
                "median_cpu_ns_per_op": median(c.cpu_ns_per_op),
                "cpu_ns_per_op_rounds": c.cpu_ns_per_op,
                "evidence": c.evidence,
                "worker": c.ready,
            }
            if "bare" in self.configs and name != "bare":
                rs = self.ratios(name)
                entry["ratio_to_bare_median"] = median(rs)
                entry["ratio_to_bare_ci95"] = self.ci(rs)
                entry["ratio_to_bare_rounds"] = rs
            out["configs"][name] = entry
        return out

    def report(self) -> str:
        lines = [
            f"{self.workload}: {self.rounds} rounds x {self.unit_ops} ops in {self.processes} "
            f"process(es) per configuration, {self.wall_s:.1f} s wall"
        ]
        lines.append(
            f"  {'config':<16}{'wall/op':>11}{'cpu/op':>11}{'ratio':>9}"
            f"{'95% CI':>15}{'IQR':>15}  evidence"
        )
        for name, c in self.configs.items():
            if "bare" in self.configs and name != "bare":
                rs = self.ratios(name)
                lo, hi = quartiles(rs)
                clo, chi = self.ci(rs)
                r, ci, iqr = f"{median(rs):.3f}x", f"{clo:.3f}-{chi:.3f}", f"{lo:.3f}-{hi:.3f}"
            else:
                r, ci, iqr = ("1.000x" if name == "bare" else "-"), "", ""
            ev = ", ".join(f"{k}={v}" for k, v in c.evidence.items())
            lines.append(
                f"  {name:<16}{fmt_time(c.median_ns):>11}"
                f"{fmt_time(median(c.cpu_ns_per_op)):>11}{r:>9}{ci:>15}{iqr:>15}  {ev}"
            )
        return "\n".join(lines)


def run_interleaved(
    workload: str,
    configs: Sequence[str],
    *,
    rounds: int,
    n: int,
    warmup: int,
    params: dict[str, Any] | None = None,
    cpu: int | None = None,
    processes: int = 1,
    verbose: bool = True,
) -> InterleavedResult:
    """Run ``workload`` under every configuration, interleaved and rotated, in warm workers.

    The rounds are split over ``processes`` successive generations of worker processes (fresh
    processes for every configuration, warmed up again). One process has a speed of its own
    that lasts as long as it does: where its objects landed in memory decides how often the
    interpreter's dictionary and method-cache lookups collide. Two processes running the very
    same code were measured 3 % apart in instructions per operation and up to +-3 % apart in
    time, steadily over a whole run; a ratio between one process and another carries that offset,
    however many rounds it is the median of. Several generations average it out.
    """
    params = dict(params or {})
    processes = max(1, min(processes, rounds))
    bounds = [rounds * g // processes for g in range(processes + 1)]
    t_start = time.perf_counter()
    results = {c: ConfigResult(c) for c in configs}
    evidence: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    round_process: list[int] = []
    r = 0
    for generation in range(processes):
        workers: list[Worker] = []
        try:
            for c in configs:
                workers.append(Worker(workload, c, params, cpu, warmup))
            for w in workers:
                ready = w.wait_ready()
                if generation == 0:
                    results[w.config].ready = ready
            for _ in range(bounds[generation + 1] - bounds[generation]):
                k = r % len(workers)
                for w in workers[k:] + workers[:k]:
                    wall, cpu_ = w.round(n)
                    results[w.config].ns_per_op.append(wall / n)
                    results[w.config].cpu_ns_per_op.append(cpu_ / n)
                round_process.append(generation)
                r += 1
                if verbose:
                    done = "  ".join(
                        f"{w.config}={fmt_time(results[w.config].ns_per_op[-1])}" for w in workers
                    )
                    print(
                        f"  [{workload}] round {r}/{rounds} (process {generation + 1}/{processes})"
                        f": {done}",
                        file=sys.stderr,
                        flush=True,
                    )
            for w in workers:
                evidence[w.config].append(w.finish().get("evidence", {}))
        finally:
            for w in workers:
                w.close()
    for c in configs:
        results[c].evidence = merge_evidence(evidence[c])
    return InterleavedResult(
        workload, n, rounds, results, params, time.perf_counter() - t_start, round_process
    )


# ---------------------------------------------------------------------------------------------
# command lines


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny iteration counts (CI smoke run; timings are meaningless)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    return p


def interleaved_parser(
    description: str,
    configs: Iterable[str] = ALL_CONFIGS,
) -> argparse.ArgumentParser:
    p = base_parser(description)
    p.add_argument(
        "--configs",
        default=",".join(configs),
        help="comma-separated configurations (default: %(default)s); 'bare' is "
        "always added. Known: " + ", ".join(CONFIG_HELP),
    )
    p.add_argument("--rounds", type=int, help="interleaved rounds (default depends on --quick)")
    p.add_argument("-n", "--ops", type=int, help="operations per round")
    p.add_argument("--warmup", type=int, help="operations each worker runs before round 1")
    p.add_argument(
        "--processes",
        type=int,
        help="successive worker processes per configuration, the rounds split between them "
        "(default depends on --quick; see docs/performance.md)",
    )
    p.add_argument(
        "--cpu",
        type=int,
        default=-2,
        help="pin workers to this core (-1: do not pin; default: the last core)",
    )
    p.add_argument(
        "--server-cpu",
        type=int,
        default=-2,
        help="PostgreSQL workloads: pin the workers' server backends to this core "
        "(-1: do not; default: the client's core, see docs/performance.md; "
        "needs a local server and permission)",
    )
    return p


def resolve_server_cpu(arg: int, client_cpu: int | None) -> int | None:
    """Default: the client's own core.

    Measured on a 2-core VM: with client and backend on different cores every loopback round
    trip goes through an idle wake-up on the other core, and an A/A comparison (bare vs bare)
    spreads +-10 % round to round; on one core a round trip is a context switch and the A/A
    spread is +-2.5 %. The other core is left to the rest of the machine.
    """
    if arg != -2:
        return None if arg < 0 else arg
    return client_cpu


def parse_configs(text: str) -> list[str]:
    configs = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIG_HELP]
    if unknown:
        raise SystemExit(f"unknown configuration(s): {', '.join(unknown)}")
    if "bare" not in configs:
        configs.insert(0, "bare")
    return list(dict.fromkeys(configs))


def resolve_cpu(arg: int) -> int | None:
    if arg == -2:
        return default_cpu()
    return None if arg < 0 else arg


def write_json(path: str | None, payload: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def interleaved_main(
    workload: str,
    description: str,
    *,
    full: dict[str, int],
    quick: dict[str, int],
    configs: Iterable[str] = ALL_CONFIGS,
    params: dict[str, Any] | None = None,
    needs_pg: bool = False,
    argv: Sequence[str] | None = None,
) -> int:
    """``main()`` for the per-workload scripts (connect_pass.py, select1_sqlite.py, ...)."""
    args = interleaved_parser(description, configs).parse_args(argv)
    chosen = parse_configs(args.configs)
    counts = quick if args.quick else full
    params = dict(params or {})
    if needs_pg:
        ok, why = pg_available()
        if not ok:
            print(f"SKIP {workload}: PostgreSQL unavailable at {pg_url().split('@')[-1]} ({why})")
            write_json(args.json, {"workload": workload, "skipped": why})
            return 0
        params.setdefault("url", pg_url())
        params.setdefault("server_cpu", resolve_server_cpu(args.server_cpu, resolve_cpu(args.cpu)))
    if POOLWATCH_CONFIGS & set(chosen):
        ok, why = poolwatch_importable()
        if not ok:
            print(
                f"poolwatch is not importable ({why}); run with --configs bare,otel "
                "or install it: pip install -e .",
                file=sys.stderr,
            )
            return 2
    res = run_interleaved(
        workload,
        chosen,
        rounds=args.rounds or counts["rounds"],
        n=args.ops or counts["n"],
        warmup=args.warmup if args.warmup is not None else counts["warmup"],
        params=params,
        cpu=resolve_cpu(args.cpu),
        processes=args.processes or counts.get("processes", 1),
    )
    print(res.report())
    write_json(args.json, res.to_json())
    return 0
