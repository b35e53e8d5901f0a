"""An instrumented app for tests/test_doctor_scenarios.py: one pool per pathology, on one exporter.

- `undersized`: pool_size=2, max_overflow=0 under 8 threads of fast statements (40 ms, 20 ms
  apart): callers queue for the two connections.
- `oversized`: pool_size=12, warmed to 12 open connections before serving, then one caller.
- `held`: each checkout holds its connection across a time.sleep between two fast queries.
- `slow`: one summary (`SELECT pg_class`, a pg_sleep) takes nearly all the held time.
- `leak`: one connection checked out at start and never returned (leak_threshold=1 s).
- `churn`: a NullPool: every checkout opens a connection.
- `healthy`: light fast traffic on a default pool.

It prints `ready` once every pool runs. On stdin, `rerun POOL_SIZE MAX_OVERFLOW` stops the
undersized workload and runs the same one on a new pool `undersized_rerun` of that size. It stops
by itself after --duration seconds, so a test that dies cannot leave it running.

    python tests/e2e/doctor_app.py --db postgresql+psycopg://... --port 9464 --duration 90
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import poolwatch

UNDERSIZED_THREADS = 8
UNDERSIZED_PAUSE = 0.02  # between checkouts, so a returned connection goes to a waiter
UNDERSIZED_STATEMENT = 0.04  # seconds of pg_sleep per checkout
HELD_SLEEP = 0.3  # seconds between the two queries of a `held` checkout
SLOW_STATEMENT = 0.3  # seconds of the slow summary
OVERSIZED = 12
# The other pools: small maxima, so that the fleet's sum stays far below 80 % of a PostgreSQL
# with the default max_connections (100), where doctor would call unused pools oversized.
SMALL = {"pool_size": 5, "max_overflow": 0}


def loop(stop: threading.Event, pause: float, body: Callable[[], None]) -> None:
    while not stop.is_set():
        body()
        if pause:
            stop.wait(pause)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    args = parser.parse_args()

    stop = threading.Event()
    threads: list[threading.Thread] = []
    engines: list[sa.Engine] = []

    def pool(name: str, **kwargs: object) -> sa.Engine:
        leak = kwargs.pop("leak_threshold", None)
        engine = sa.create_engine(args.db, **kwargs)  # type: ignore[arg-type]
        poolwatch.instrument(engine, name=name, labels={"app": "doctor"}, port=args.port,
                             addr="127.0.0.1", leak_threshold=leak, leak_stacks=False)
        engines.append(engine)
        return engine

    def run(n: int, pause: float, body: Callable[[], None], until: threading.Event = stop) -> None:
        for _ in range(n):
            t = threading.Thread(target=loop, args=(until, pause, body), daemon=True)
            t.start()
            threads.append(t)

    def queries(engine: sa.Engine, *sql: str, sleep: float = 0.0) -> Callable[[], None]:
        def body() -> None:
            with engine.connect() as c:
                for i, s in enumerate(sql):
                    if i and sleep:
                        time.sleep(sleep)  # work between queries while holding the connection
                    c.execute(sa.text(s))
        return body

    oversized = pool("oversized", pool_size=OVERSIZED, max_overflow=0)
    warm = [oversized.connect() for _ in range(OVERSIZED)]
    for c in warm:
        c.close()

    sleep_sql = f"SELECT pg_sleep({UNDERSIZED_STATEMENT})"
    undersized_stop = threading.Event()
    undersized = pool("undersized", pool_size=2, max_overflow=0, pool_timeout=20)
    run(UNDERSIZED_THREADS, UNDERSIZED_PAUSE, queries(undersized, sleep_sql), undersized_stop)
    run(1, 0.2, queries(oversized, "SELECT 1"))
    held = pool("held", **SMALL)
    run(2, 0.05, queries(held, "SELECT 1", "SELECT 2", sleep=HELD_SLEEP))
    slow = pool("slow", **SMALL)
    run(1, 0.02, queries(slow, f"SELECT pg_sleep({SLOW_STATEMENT}) FROM pg_class LIMIT 1",
                         "SELECT count(*) FROM pg_namespace"))
    leak = pool("leak", leak_threshold=1.0, **SMALL)
    leaked = leak.connect()
    leaked.execute(sa.text("SELECT 1"))
    run(1, 0.2, queries(leak, "SELECT 1"))
    churn = pool("churn", poolclass=NullPool)
    run(1, 0.2, queries(churn, "SELECT 1"))
    healthy = pool("healthy", **SMALL)
    run(1, 0.1, queries(healthy, "SELECT 1"))
    print("ready", flush=True)

    def commands() -> None:
        for line in sys.stdin:
            words = line.split()
            if len(words) == 3 and words[0] == "rerun":
                undersized_stop.set()
                rerun = pool("undersized_rerun", pool_size=int(words[1]),
                             max_overflow=int(words[2]), pool_timeout=20)
                run(UNDERSIZED_THREADS, UNDERSIZED_PAUSE, queries(rerun, sleep_sql))
                print("rerunning", flush=True)

    threading.Thread(target=commands, daemon=True).start()
    time.sleep(args.duration)
    stop.set()
    undersized_stop.set()
    for t in threads:
        t.join(2)
    leaked.close()
    for engine in engines:
        engine.dispose()


if __name__ == "__main__":
    main()
