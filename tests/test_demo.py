"""``poolwatch demo``, the README's first command, run as a user would and scraped over HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.services import free_port, wait_for_port


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("db_client_connection_pool_name") == "demo":
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples, name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    want = {"db_client_connection_pool_name": "demo", **labels}
    for (n, ls), v in samples.items():
        if n == name and dict(ls) == want:
            return float(v)
    return float("nan")


@pytest.mark.slow
def test_demo_runs_dry_and_recovers(tmp_path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "poolwatch", "demo", "--duration", "20", "--no-tui",
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    seen_waiting = seen_leak = 0.0
    scrapes = 0
    try:
        wait_for_port(port, 30)
        deadline = time.monotonic() + 40
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                s = _scrape(port)
            except OSError:
                break  # the demo finished and stopped serving
            if not s:
                # Before instrument() registered the pool, or after uninstrument() at the end,
                # the server answers with no pool series at all.
                time.sleep(0.1)
                continue
            scrapes += 1
            seen_waiting = max(seen_waiting, _value(s, "db_client_connection_pending_requests"))
            seen_leak = max(seen_leak, _value(s, "poolwatch_connections_leaked"))
            assert _value(s, "db_client_connection_max") == 7
            time.sleep(0.25)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert scrapes >= 20  # about four a second over the 20 s run
    assert seen_waiting >= 5  # the burst phase queued callers
    assert seen_leak == 1  # the leak phase's forgotten connection
    for phase in ("steady", "burst", "leak", "slow queries", "recovery"):
        assert f"phase: {phase}" in output
    assert "slow statement on pool 'demo'" in output
    assert "held for" in output and "longer than leak_threshold" in output
    final = output.strip().splitlines()[-1]
    assert final.startswith("done: ") and "final used 0, waiting 0" in final
    assert int(final.split()[1]) > 0  # checkouts timed out during the burst
