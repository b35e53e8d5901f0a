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
With ``--kind psycopg_pool`` the same three pools are psycopg_pool pools (``busy``: min_size =
max_size = 2, timeout 0.5; ``quiet``: max_size 15, a connection closed before it is returned now
and then, a bad return; ``broken``: a NullConnectionPool of one connection).

    python tests/e2e/app.py --db postgresql+psycopg://... --port 9464 --duration 60
"""

from __future__ import annotations

import argparse
import functools
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


def psycopg_pools(args: argparse.Namespace) -> None:
    from psycopg import OperationalError, errors
    from psycopg_pool import ConnectionPool, NullConnectionPool
    from psycopg_pool import PoolTimeout as PsycopgPoolTimeout

    def info(url: str) -> str:
        u = sa.make_url(url)
        return f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}"

    busy = ConnectionPool(info(args.db), min_size=2, max_size=2, timeout=0.5, open=True)
    quiet = ConnectionPool(info(args.db), min_size=2, max_size=15, open=True)
    broken = NullConnectionPool(info(closed_port_url(args.db)), max_size=1, timeout=2,
                                open=True)
    poolwatch.instrument(busy, name="busy", labels={"role": "writer"}, port=args.port,
                         addr="127.0.0.1", leak_threshold=1.0, leak_stacks=False)
    poolwatch.instrument(quiet, name="quiet", labels={"role": "reader"}, leak_threshold=1.0,
                         leak_stacks=False)
    poolwatch.instrument(broken, name="broken", labels={"role": "reader"})

    def busy_worker(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with busy.connection() as conn:
                    conn.execute("SELECT pg_sleep(%s)", [BUSY_HOLD_SECONDS])
            except PsycopgPoolTimeout:
                pass  # expected: the pool is exhausted on purpose

    def quiet_worker(stop: threading.Event) -> None:
        n = 0
        while not stop.wait(0.2):
            n += 1
            conn = quiet.getconn()
            try:
                conn.execute("SELECT count(*) FROM pg_class")
                if n % 10 == 0:
                    try:
                        conn.execute("SELECT 1 / 0")  # a statement error
                    except errors.DivisionByZero:
                        conn.rollback()
                if n % 25 == 0:
                    conn.close()  # returned closed: a bad return, an invalidation
            finally:
                quiet.putconn(conn)

    def broken_worker(stop: threading.Event) -> None:
        while not stop.wait(0.5):
            try:
                with broken.connection():
                    pass
            except OperationalError:
                pass  # expected: connection refused

    run(args, [busy_worker] * BUSY_THREADS + [quiet_worker, broken_worker])
    for pool in (busy, quiet, broken):
        pool.close()


def run(args: argparse.Namespace, workers: list) -> None:  # type: ignore[type-arg]
    stop = threading.Event()
    threads = [threading.Thread(target=w, args=(stop,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    print("app running", flush=True)
    time.sleep(args.duration)
    stop.set()
    for t in threads:
        t.join(BUSY_HOLD_SECONDS + 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--kind", choices=("sqlalchemy", "psycopg_pool"), default="sqlalchemy")
    args = parser.parse_args()
    if args.kind == "psycopg_pool":
        psycopg_pools(args)
        return

    busy = sa.create_engine(args.db, pool_size=2, max_overflow=0, pool_timeout=0.5)
    quiet = sa.create_engine(args.db)
    broken = sa.create_engine(closed_port_url(args.db), pool_size=1, max_overflow=0)
    poolwatch.instrument(busy, name="busy", labels={"role": "writer"}, port=args.port,
                         addr="127.0.0.1", leak_threshold=1.0, leak_stacks=False)
    poolwatch.instrument(quiet, name="quiet", labels={"role": "reader"}, leak_threshold=1.0,
                         leak_stacks=False)
    poolwatch.instrument(broken, name="broken", labels={"role": "reader"})

    run(args, [functools.partial(busy_worker, busy) for _ in range(BUSY_THREADS)]
        + [functools.partial(quiet_worker, quiet), functools.partial(broken_worker, broken)])
    busy.dispose()
    quiet.dispose()
    broken.dispose()


if __name__ == "__main__":
    main()
