"""The demo's workload: the phases of one cycle (steady, a burst, a leak, slow queries, recovery)
and the threads that follow the current one."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, insert, select

from .database import CUSTOMERS, DemoTables, sleep_statement

__all__ = ["MAX_WORKERS", "PHASES", "Phase", "Workload", "cycles"]


@dataclass(frozen=True)
class Phase:
    name: str
    share: float  # of one cycle's duration
    workers: int  # threads issuing short transactions
    hold: float  # seconds each transaction keeps its connection
    slow_workers: int = 0  # threads issuing slow statements
    leak: bool = False  # one connection checked out and not returned during the phase
    description: str = ""


PHASES: tuple[Phase, ...] = (
    Phase("steady", 0.2, 3, 0.02, description="normal traffic, the pool has room"),
    Phase(
        "burst", 0.2, 24, 0.5, description="a burst saturates the pool; callers wait and time out"
    ),
    Phase(
        "leak",
        0.2,
        3,
        0.02,
        leak=True,
        description="a connection is checked out and never returned",
    ),
    Phase(
        "slow queries", 0.2, 3, 0.02, slow_workers=3, description="slow statements hold connections"
    ),
    Phase("recovery", 0.2, 3, 0.02, description="back to normal; gauges return to idle"),
)
MAX_WORKERS = max(p.workers for p in PHASES)


class Workload:
    """Threads that follow the current phase; every loop is bounded by ``stop``."""

    def __init__(self, engine: Engine, tables: DemoTables, tracer: Any = None) -> None:
        self.engine = engine
        self.tables = tables
        self.tracer = tracer
        self.phase = PHASES[0]
        self.stop = threading.Event()
        self.errors: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        o, c = tables.orders, tables.customers
        self._recent = (
            select(o.c.id, o.c.total, c.c.name)
            .join_from(o, c, c.c.id == o.c.customer_id)
            .order_by(o.c.id.desc())
            .limit(5)
        )

    def start(self) -> None:
        for i in range(MAX_WORKERS):
            self._threads.append(threading.Thread(target=self._worker, args=(i,), daemon=True))
        for i in range(max(p.slow_workers for p in PHASES)):
            self._threads.append(threading.Thread(target=self._slow, args=(i,), daemon=True))
        self._threads.append(threading.Thread(target=self._leaker, daemon=True))
        for t in self._threads:
            t.start()

    def set_phase(self, phase: Phase) -> None:
        self.phase = phase

    def _count(self, e: Exception) -> None:
        name = type(e).__name__
        self.errors[name] = self.errors.get(name, 0) + 1

    def _worker(self, i: int) -> None:
        rnd = random.Random(i)
        orders = self.tables.orders
        n = 0
        while not self.stop.is_set():
            phase = self.phase
            if i >= phase.workers:
                self.stop.wait(0.05)
                continue
            n += 1
            cid = rnd.randint(1, CUSTOMERS)
            span = (
                self.tracer.start_as_current_span("GET /customers/{id}/orders")
                if self.tracer is not None
                else contextlib.nullcontext()
            )
            try:
                # The connection is held for the phase's "hold" (a request doing other work
                # while it keeps its connection), reading only, so SQLite writers don't queue.
                with span, self.engine.connect() as c:
                    c.execute(self._recent.where(orders.c.customer_id == cid)).all()
                    self.stop.wait(phase.hold)
                if n % 5 == 0:
                    with self.engine.begin() as c:
                        c.execute(insert(orders).values(customer_id=cid, total=rnd.randint(1, 500)))
            except Exception as e:
                self._count(e)
            self.stop.wait(0.01 + rnd.random() * 0.03)

    def _leaker(self) -> None:
        """Checks a connection out when a leak phase starts and forgets it until it ends."""
        while not self.stop.is_set():
            if not self.phase.leak:
                self.stop.wait(0.05)
                continue
            try:
                conn = self.engine.connect()
            except Exception as e:
                self._count(e)
                continue
            try:
                conn.execute(select(func.count()).select_from(self.tables.orders)).scalar_one()
                while self.phase.leak and not self.stop.wait(0.05):
                    pass
            finally:
                conn.close()

    def _slow(self, i: int) -> None:
        while not self.stop.is_set():
            if i >= self.phase.slow_workers:
                self.stop.wait(0.05)
                continue
            try:
                with self.engine.connect() as c:
                    c.execute(sleep_statement(self.engine, 1.0))
            except Exception as e:
                self._count(e)

    def close(self) -> None:
        """Stops every thread; they return their connections within a slow statement's second."""
        self.stop.set()
        deadline = time.monotonic() + 10
        for t in self._threads:
            if t.ident is not None:  # a Ctrl-C can land while start() is still starting them
                t.join(max(0.0, deadline - time.monotonic()))


def cycles(duration: float) -> Iterator[tuple[float, Phase]]:
    """(phase end time, phase) forever; one cycle lasts ``duration`` (or 100 s when looping)."""
    cycle = duration if duration > 0 else 100.0
    start = time.monotonic()
    while True:
        for phase in PHASES:
            start += phase.share * cycle
            yield start, phase
        if duration > 0:
            return
