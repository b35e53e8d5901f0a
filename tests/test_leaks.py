"""Leak detection: counted, logged once with the checkout stack, logged again on return."""

from __future__ import annotations

import logging
import time

from sqlalchemy import text

import poolwatch
from tests.support.pools import Reader


def _wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def checkout_that_leaks(engine):  # type: ignore[no-untyped-def]
    conn = engine.connect()
    conn.execute(text("SELECT 1"))
    return conn


def test_a_connection_held_past_the_threshold_is_a_leak(
    postgres_url, registry, make_engine, caplog
) -> None:
    engine = make_engine(postgres_url, pool_size=2)
    handle = poolwatch.instrument(engine, registry=registry, leak_threshold=0.3)
    m = Reader(registry, handle.name)
    with caplog.at_level(logging.INFO, logger="poolwatch"):
        with engine.connect():
            pass  # returned in time: not a leak
        conn = checkout_that_leaks(engine)
        _wait_for(lambda: m("poolwatch_connections_leaked") == 1)
        time.sleep(0.4)  # several more scans: still one leak, counted once
        assert m("poolwatch_connection_leaks_total") == 1
        assert m("poolwatch_connections_leaked") == 1
        conn.close()
    assert m("poolwatch_connections_leaked") == 0
    assert m("poolwatch_connection_leaks_total") == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "longer than leak_threshold=0.3 s" in message
    assert "in checkout_that_leaks" in message and "test_leaks.py" in message
    assert "/sqlalchemy/" not in message  # only the application's frames
    returned = [
        r
        for r in caplog.records
        if r.levelno == logging.INFO and "returned after" in r.getMessage()
    ]
    assert len(returned) == 1


def test_leak_counts_without_stacks(postgres_url, registry, make_engine, caplog) -> None:
    engine = make_engine(postgres_url)
    handle = poolwatch.instrument(engine, registry=registry, leak_threshold=0.2, leak_stacks=False)
    m = Reader(registry, handle.name)
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        conn = engine.connect()
        _wait_for(lambda: m("poolwatch_connection_leaks_total") == 1)
        conn.close()
    assert "leak_stacks=False" in caplog.text
    assert m("poolwatch_connections_leaked") == 0


def test_leak_detection_is_off_by_default(registry, make_engine) -> None:
    engine = make_engine("sqlite://")
    handle = poolwatch.instrument(engine, registry=registry)
    assert handle.settings.leak_threshold is None
    assert Reader(registry, handle.name)("poolwatch_connections_leaked") == 0
