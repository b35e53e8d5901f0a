"""A small instrumented app for tests/test_e2e_prometheus.py.

Two pools on one exporter:
- `busy` (role=writer): pool_size=2, max_overflow=0, pool_timeout=0.5, hammered by more threads
  than it has connections, each holding its connection in `pg_sleep`: the pool stays exhausted,
  callers queue and time out, and holds exceed the 1 s leak threshold.
- `quiet` (role=reader): a default-sized pool with one thread doing light traffic, a failing
  statement now and then (statement errors) and an occasional invalidation.
- `broken` (role=reader): points at a loopback port nobody listens on, so every attempt to open
  a connection fails (connection errors).

It stops by itself after --duration seconds, so a test that dies cannot leave it running.

    python tests/e2e/app.py --db postgresql+psycopg://... --port 9464 --duration 60
"""

from __future__ import annotations

import argparse
import socket
import threading
import time

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

import poolwatch

BUSY_THREADS = 6  # three times the pool's two connections
BUSY_HOLD_SECONDS = 1.5  # longer than pool_timeout and than the leak threshold


def busy_worker(engine: sa.Engine, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT pg_sleep(:s)"), {"s": BUSY_HOLD_SECONDS})
        except PoolTimeout:
            pass  # expected: the pool is exhausted on purpose


def quiet_worker(engine: sa.Engine, stop: threading.Event) -> None:
    n = 0
    while not stop.wait(0.2):
        n += 1
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT count(*) FROM pg_class"))
            if n % 10 == 0:
                try:
                    conn.execute(sa.text("SELECT 1 / 0"))  # a statement error
                except DBAPIError:
                    conn.rollback()
            if n % 25 == 0:
                conn.invalidate()  # a hard invalidation


def broken_worker(engine: sa.Engine, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        try:
            with engine.connect():
                pass
        except DBAPIError:
            pass  # expected: connection refused


def closed_port_url(url: str) -> str:
    with socket.socket() as s:  # a port that was free a moment ago: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return sa.make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    args = parser.parse_args()

    busy = sa.create_engine(args.db, pool_size=2, max_overflow=0, pool_timeout=0.5)
    quiet = sa.create_engine(args.db)
    broken = sa.create_engine(closed_port_url(args.db), pool_size=1, max_overflow=0)
    poolwatch.instrument(busy, name="busy", labels={"role": "writer"}, port=args.port,
                         addr="127.0.0.1", leak_threshold=1.0, leak_stacks=False)
    poolwatch.instrument(quiet, name="quiet", labels={"role": "reader"}, leak_threshold=1.0,
                         leak_stacks=False)
    poolwatch.instrument(broken, name="broken", labels={"role": "reader"})

    stop = threading.Event()
    threads = [threading.Thread(target=busy_worker, args=(busy, stop), daemon=True)
               for _ in range(BUSY_THREADS)]
    threads.append(threading.Thread(target=quiet_worker, args=(quiet, stop), daemon=True))
    threads.append(threading.Thread(target=broken_worker, args=(broken, stop), daemon=True))
    for t in threads:
        t.start()
    print("app running", flush=True)
    time.sleep(args.duration)
    stop.set()
    for t in threads:
        t.join(BUSY_HOLD_SECONDS + 2)
    busy.dispose()
    quiet.dispose()
    broken.dispose()


if __name__ == "__main__":
    main()
