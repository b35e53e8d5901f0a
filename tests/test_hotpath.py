"""The two builds of the hot path: which one runs, and that both record exactly the same."""

from __future__ import annotations

import logging
import math
import os
import random
import subprocess
import sys
import threading
from bisect import bisect_left
from collections import deque
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import text

import poolwatch
from poolwatch.core import build as wrappers
from poolwatch.core import hotpath
from poolwatch.core.state import PoolState
from tests.support.builds import compiled_build
from tests.support.pools import Reader
from tests.test_statements import _series


def _chosen(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import poolwatch.core.build as w; print(w.COMPILED)"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_compiled_build_is_installed_and_chosen() -> None:
    module = compiled_build()
    assert module.COMPILED is True and hotpath.COMPILED is False
    if wrappers.pure_python_requested():
        assert wrappers.COMPILED is False
        return
    assert wrappers.COMPILED is True
    assert wrappers.checkout_wrapper is module.checkout_wrapper
    assert wrappers.Buckets is module.Buckets  # the histograms count in C too
    assert type(wrappers.checkout_wrapper).__name__ == "cython_function_or_method"


@pytest.mark.parametrize(
    ("value", "compiled"), [("1", False), ("on", False), ("0", True), ("false", True), ("", True)]
)
def test_POOLWATCH_PURE_PYTHON_chooses_the_interpreted_build(value: str, compiled: bool) -> None:
    compiled_build()
    result = _chosen({"POOLWATCH_PURE_PYTHON": value})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(compiled)


def test_a_bad_POOLWATCH_PURE_PYTHON_never_crashes_the_import() -> None:
    # An application that never calls instrument() imports poolwatch through a library: an
    # environment variable must not crash it. The value is named once; the default stays.
    result = _chosen({"POOLWATCH_PURE_PYTHON": "maybe"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"  # the compiled build, the default
    assert result.stderr.count("invalid POOLWATCH_PURE_PYTHON='maybe'") == 1
    assert "accepts true/false (1/0, yes/no, on/off)" in result.stderr


def test_a_build_from_another_source_is_not_used(tmp_path: Path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    compiled_build()
    edited = tmp_path / "hotpath.py"
    edited.write_bytes(Path(hotpath.__file__).read_bytes() + b"# edited after the build\n")
    monkeypatch.setattr(hotpath, "__file__", str(edited))
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        assert wrappers.compiled_build() is None
    assert "was compiled from another version of" in caplog.text
    assert "running the interpreted module" in caplog.text


@pytest.mark.parametrize("bounds", [(0.001, 0.01, 0.1, 1.0, 10.0), (0.5,), ()])
def test_buckets_count_each_value_where_bisect_left_puts_it(build: str, bounds) -> None:  # type: ignore[no-untyped-def]
    module = hotpath if build == "interpreted" else compiled_build()
    rng = random.Random(5)
    values = [
        *bounds, *(math.nextafter(b, math.inf) for b in bounds),
        *(math.nextafter(b, -math.inf) for b in bounds),
        0.0, -1.0, 1e300, 5e-324, 3,  # an int is a value too
        *(rng.uniform(0, 12) for _ in range(500)), *(rng.expovariate(300) for _ in range(500)),
    ]  # fmt: skip
    buckets = module.Buckets(bounds)
    expected = [0] * (len(bounds) + 1)
    total = 0.0
    for v in values:
        buckets.record(v)
        expected[bisect_left(bounds, v)] += 1
        total += v  # in recording order, as a C double adds them
    assert buckets.snapshot() == (expected, total)


def test_the_wrappers_find_the_buckets_of_a_recorder_and_only_of_buckets(build: str) -> None:
    # The wrappers call Buckets.add directly (C, no float made) where a recorder is a
    # Buckets' record; any other recorder (an exemplar's, another backend's) is called as given.
    module = hotpath if build == "interpreted" else compiled_build()
    buckets = module.Buckets((0.5, 1.0))
    assert module.cells_of(buckets.record) is buckets
    assert module.cells_of(deque().append) is None
    assert module.cells_of(lambda seconds: None) is None
    if build == "compiled":  # the interpreted build's Buckets is another type
        assert module.cells_of(hotpath.Buckets((0.5,)).record) is None
    series = module.Series("SELECT", "SELECT t", buckets.record, None, lambda: None)
    other = module.Series("SELECT", "SELECT t", deque().append, None, lambda: None)
    assert series.cells is buckets and other.cells is None


def test_the_orphans_flag_is_the_states_and_of_the_chosen_build(build: str) -> None:
    # The compiled checkin wrapper reads the flag as a C field of its own build's Flag.
    module = hotpath if build == "interpreted" else compiled_build()
    state = PoolState("p")
    assert type(state.orphans_flag) is module.Flag and state.has_orphans is False
    state.has_orphans = True
    assert state.orphans_flag.value is True
    state.has_orphans = False
    assert state.orphans_flag.value is False and state.has_orphans is False


def test_waiting_callers_take_a_slot_each_and_give_it_back(
    build: str, postgres_url: str, registry, make_engine, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    # Two slots to start with, so the third caller makes them grow.
    monkeypatch.setattr("poolwatch.core.state._WAITING_SLOTS", 2)
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0, pool_timeout=10)
    handle = poolwatch.instrument(engine, registry=registry)
    state = handle.state
    assert type(state.waiting) is (hotpath if build == "interpreted" else compiled_build()).Waiting
    assert state.waiting.size == 2
    done: list[str] = []

    def checkout() -> None:
        with engine.connect():
            done.append("ok")

    held = engine.connect()
    threads = [threading.Thread(target=checkout) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(500):  # bounded: 5 s
        if state.snapshot().pending == 3:
            break
        threading.Event().wait(0.01)
    snap = state.snapshot()
    # The start times come from the build's clock and are read against time.perf_counter():
    # the same clock in both builds, or this would be far off (or negative).
    assert snap.pending == 3 and 0 < snap.longest_wait < 5
    assert len(state.waiting.starts()) == 3
    slots = state.waiting.size  # grown: 3 (interpreted, one at a time) or 4 (compiled, doubled)
    assert slots >= 3 and len(state.waiting.free_slots()) == slots - 3
    held.close()
    for t in threads:
        t.join()
    assert done == ["ok"] * 3
    # Every slot back, none counted, and the slots are reused rather than grown.
    assert state.snapshot().pending == 0 and state.snapshot().longest_wait == 0.0
    assert sorted(state.waiting.free_slots()) == list(range(slots))
    assert state.waiting.starts() == [] and state.waiting.size == slots


def test_waiting_slots_are_never_shared_or_lost(build: str) -> None:
    module = hotpath if build == "interpreted" else compiled_build()
    waiting = module.Waiting(1)
    assert waiting.starts() == [] and waiting.free_slots() == [0]
    taken = [waiting.enter(float(i)) for i in range(5)]
    assert sorted(taken) == list(range(5)) and sorted(waiting.starts()) == [0, 1, 2, 3, 4]
    waiting.leave(taken[1])
    assert sorted(waiting.starts()) == [0, 2, 3, 4]
    assert waiting.enter(9.0) == taken[1]  # the slot just freed is the next one taken
    waiting.leave(-1)  # no slot (compiled: no memory for one): nothing to give back
    waiting.clear()
    assert waiting.starts() == [] and sorted(waiting.free_slots()) == list(range(waiting.size))
    with pytest.raises(ValueError, match="at least 1"):
        module.Waiting(0)

    # Threads taking and giving back slots at once: each slot holds one caller's start at a
    # time (a shared slot would leave a start behind or a slot lost).
    errors: list[str] = []

    def churn(me: int) -> None:
        for _ in range(5_000):  # bounded
            slot = waiting.enter(float(me))
            starts = waiting.starts()
            if starts.count(float(me)) != 1:
                errors.append(f"{me}: {starts}")
            waiting.leave(slot)

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert waiting.starts() == [] and sorted(waiting.free_slots()) == list(range(waiting.size))
    assert waiting.size <= 16  # at most 8 callers inside at once


def test_both_builds_record_the_same_exact_metrics(
    build, postgres_url, registry, make_engine
) -> None:
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    with engine.connect():
        pass  # the dialect's first-connect queries, before instrumenting
    handle = poolwatch.instrument(engine, registry=registry, pool_buckets=(0.1, 0.2, 0.3))
    wrapper_type = type(engine.pool.__dict__["connect"]).__name__
    assert wrapper_type == ("function" if build == "interpreted" else "cython_function_or_method")
    m = Reader(registry, handle.name)
    timeouts: list[BaseException] = []

    def checkout() -> None:
        try:
            with engine.connect():
                pass
        except sqlalchemy.exc.TimeoutError as e:
            timeouts.append(e)

    with engine.connect():
        threads = [threading.Thread(target=checkout) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(timeouts) == 2 and m("db_client_connection_timeouts_total") == 2
    with engine.begin() as c:
        c.execute(text("CREATE TEMPORARY TABLE pw_hot (id int PRIMARY KEY)"))
        for _ in range(3):
            c.execute(text("SELECT 1"))
        c.execute(text("INSERT INTO pw_hot (id) VALUES (:i)"), [{"i": i} for i in range(5)])
        no_params = c.execution_options(no_parameters=True)  # do_execute_no_params
        assert no_params.exec_driver_sql("SELECT count(*) FROM pw_hot").scalar() == 5
    with engine.connect() as c, pytest.raises(sqlalchemy.exc.DataError):
        c.execute(text("SELECT 1 / 0"))

    # 1 held + 2 timed out + 1 transaction + 1 failing statement.
    assert m("db_client_connection_wait_time_seconds_count") == 5
    assert m.waits_at_least(0.1) == 2
    assert m("db_client_connection_wait_time_seconds_bucket", le="0.2") == 5
    assert m("db_client_connection_use_time_seconds_count") == 3
    # The one connection was opened before instrument(): adopted as idle from the pool's queue.
    assert (m.used, m.pending, m.idle) == (0, 0, 1)
    # The two callers that timed out gave their waiting slots back too.
    waiting = handle.state.waiting
    assert waiting.starts() == [] and sorted(waiting.free_slots()) == list(range(waiting.size))
    series = _series(registry, handle.name)
    assert series == {
        ("CREATE", "CREATE TABLE pw_hot", ""): 1,
        ("SELECT", "SELECT", ""): 3,
        ("INSERT", "INSERT pw_hot", ""): 1,  # one executemany of five rows
        ("SELECT", "SELECT pw_hot", ""): 1,
        ("SELECT", "SELECT", "data_exception"): 1,  # 22012 division_by_zero, class 22
    }
    poolwatch.uninstrument(engine)
    assert "connect" not in engine.pool.__dict__ and "_return_conn" not in engine.pool.__dict__
    assert not {"do_execute", "do_execute_no_params", "do_executemany"} & set(
        engine.dialect.__dict__
    )
