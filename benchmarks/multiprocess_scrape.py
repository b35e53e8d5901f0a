"""The cost of one multiprocess scrape after many worker restarts (issue #15's budget row).

16 live workers x 5 pools x 100 statement summaries, after 500 workers that each wrote the same
series and exited, every exit handled as gunicorn's ``child_exit`` hook does. The scrape is what
``poolwatch.exposition.service_registry()`` serves: every file read and merged, dead processes
swept first. ``--compare`` also times prometheus_client's ``MultiProcessCollector`` over the same
history with only its own ``mark_process_dead`` (no archive: one counter and one histogram file
per worker that ever ran), the client_python #204/#275 situation.

    python benchmarks/multiprocess_scrape.py [--live 16] [--pools 5] [--summaries 100]
        [--restarts 500] [--scrapes 10] [--compare] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BUDGET_MS = 100.0


def _worker(pools: int, summaries: int) -> list[Any]:
    """In a forked child: instrument ``pools`` SQLite engines, record one checkout and
    ``summaries`` statement summaries each, write the files."""
    import sqlalchemy

    import poolwatch
    from poolwatch.backends.multiprocess import service

    kept = []
    for p in range(pools):
        engine = sqlalchemy.create_engine("sqlite://")
        inst = poolwatch.instrument(engine, name=f"bench-{p}", tracing=False)
        with engine.connect():
            pass
        for s in range(summaries):
            inst.tracker.statement("SELECT", f"SELECT t{s}").record(0.0004)
        kept.append((engine, inst))
    service.flush_now()
    return kept


def _history(path: str, args: argparse.Namespace, *, archive: bool) -> list[int]:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    from prometheus_client import multiprocess

    from poolwatch.backends.multiprocess import mark_process_dead, tracker

    if not archive:
        # prometheus_client alone: no live worker sweeps either (it would remove files under the
        # plain collector's feet, the race poolwatch's own collector locks against).
        tracker.SWEEP_EVERY = 10**9

    for _ in range(args.restarts):
        pid = os.fork()
        if pid == 0:
            _worker(args.pools, args.summaries)
            os._exit(0)
        os.waitpid(pid, 0)
        if archive:
            mark_process_dead(pid, path)
        else:
            multiprocess.mark_process_dead(pid, path)
    live = []
    ready_r, ready_w = os.pipe()
    for _ in range(args.live):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            _worker(args.pools, args.summaries)
            os.write(ready_w, b"r")
            os.read(r, 1)  # until the parent is done
            os._exit(0)
        os.close(r)
        live.append((pid, w))
    for _ in range(args.live):  # every live worker has written its files
        os.read(ready_r, 1)
    os.close(ready_r)
    os.close(ready_w)
    time.sleep(2.0)  # and its sampler has gone quiet (nothing changes: nothing is written)
    return [pid for pid, _ in live] + [w for _, w in live]


def _time_scrapes(registry: Any, n: int) -> tuple[list[float], int, float]:
    """``n`` timed scrapes after a first one (returned apart: it parses every file's keys)."""
    from poolwatch.exposition import generate_latest  # prometheus_client's for a plain registry

    t0 = time.perf_counter()
    generate_latest(registry)
    first = (time.perf_counter() - t0) * 1000
    times, lines = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        body = generate_latest(registry)
        times.append((time.perf_counter() - t0) * 1000)
        lines = body.count(b"\n")
    return times, lines, first


def _finish(handles: list[int], live: int) -> None:
    pids, writes = handles[:live], handles[live:]
    for w in writes:
        os.write(w, b"x")
        os.close(w)
    for pid in pids:
        os.waitpid(pid, 0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from poolwatch.exposition import service_registry

    out: dict[str, Any] = {"live": args.live, "pools": args.pools, "summaries": args.summaries,
                           "restarts": args.restarts, "budget_ms": BUDGET_MS}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="pw-mp-scrape-") as path:
        t0 = time.perf_counter()
        handles = _history(path, args, archive=True)
        out["history_s"] = round(time.perf_counter() - t0, 1)
        try:
            times, lines, first = _time_scrapes(service_registry(path), args.scrapes)
        finally:
            _finish(handles, args.live)
        out["files"] = len(list(Path(path).glob("*.db")))
        out["lines"] = lines
        out["scrape_ms_median"] = round(statistics.median(times), 1)
        out["scrape_ms_max"] = round(max(times), 1)
        out["first_scrape_ms"] = round(first, 1)
    print(json.dumps(out), flush=True)  # before the (slow) comparison
    if args.compare:
        with tempfile.TemporaryDirectory(prefix="pw-mp-scrape-plain-") as path:
            handles = _history(path, args, archive=False)
            try:
                registry = CollectorRegistry()
                MultiProcessCollector(registry, path)
                times, _, _ = _time_scrapes(registry, args.scrapes)
            finally:
                _finish(handles, args.live)
            out["plain_files"] = len(list(Path(path).glob("*.db")))
            out["plain_scrape_ms_median"] = round(statistics.median(times), 1)
    out["pass"] = out["scrape_ms_median"] < BUDGET_MS
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--live", type=int, default=16)
    ap.add_argument("--pools", type=int, default=5)
    ap.add_argument("--summaries", type=int, default=100)
    ap.add_argument("--restarts", type=int, default=500)
    ap.add_argument("--scrapes", type=int, default=10)
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out = run(args)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>24}: {v}")
    return 0 if out["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
