"""One instance of a fleet, for tests/test_fleet_e2e.py.

One pool (pool_size=5, max_overflow=3: it may open 8 connections), named --name, exported on
--port, its connections named after the pool (application_name=True) so the test can count them
in pg_stat_activity. It opens two connections (the server's limit is read on a connection being
opened) and keeps one checked out and one idle in the pool: 2 open connections, 1 used, 1 idle.

It stops by itself after --duration seconds, so a test that dies cannot leave it running.

    python tests/e2e/fleet_app.py --db postgresql+psycopg://... --name fleet-a --port 9464 \
        --duration 60
"""

from __future__ import annotations

import argparse
import time

import sqlalchemy as sa

import poolwatch

POOL_SIZE = 5
MAX_OVERFLOW = 3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    args = parser.parse_args()

    engine = sa.create_engine(args.db, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)
    poolwatch.instrument(engine, name=args.name, labels={"role": "primary"}, port=args.port,
                         addr="127.0.0.1", application_name=True)
    held = engine.connect()
    held.execute(sa.text("SELECT 1"))
    held.commit()  # held, but not idle in a transaction
    with engine.connect() as returned:  # a second connection, back in the pool: idle
        returned.execute(sa.text("SELECT 1"))
    print("ready", flush=True)
    time.sleep(args.duration)
    held.close()
    engine.dispose()


if __name__ == "__main__":
    main()
