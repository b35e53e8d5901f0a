"""``poolwatch demo``, the README's first command, run as a user would and scraped over HTTP, on
SQLite, the real PostgreSQL and the real MariaDB/MySQL: it serves its metrics on the port it
prints, its workload raises nothing but the burst's pool timeouts, and it leaves the user's
database as it found it, however it ends."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, inspect, text

from poolwatch import demo
from tests.support.services import free_port, unavailable

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
KEEP = f"app_data_{os.getpid()}"  # the user's own table, in the user's database
MYSQL = os.environ.get("POOLWATCH_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")
HEADLINE = re.compile(
    r"^poolwatch demo on (?P<db>\S+) \(tables (?P<tables>[a-z0-9_, ]+), dropped at exit\);"
    r" metrics at http://127\.0\.0\.1:(?P<port>\d+)/metrics$",
    re.MULTILINE,
)


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        body = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.labels.get("db_client_connection_pool_name") == "demo":
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: Samples, name: str, **labels: str) -> float:
    want = {"db_client_connection_pool_name": "demo", **labels}
    for (n, ls), v in samples.items():
        if n == name and dict(ls) == want:
            return float(v)
    return float("nan")


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# Every object whose name starts so: tables, and PostgreSQL's sequences, indexes and types.
_OBJECTS = {
    "postgresql": "SELECT relname FROM pg_class WHERE starts_with(relname, :p)"
    " UNION ALL SELECT typname FROM pg_type WHERE starts_with(typname, :p)",
    "mysql": "SELECT table_name FROM information_schema.tables"
    " WHERE table_schema = DATABASE() AND LEFT(table_name, CHAR_LENGTH(:p)) = :p",
    "sqlite": "SELECT name FROM sqlite_master WHERE substr(name, 1, length(:p)) = :p",
}


def _objects(url: str, prefix: str) -> set[str]:
    """What the database holds under the demo run's prefix. Other sessions' tests share the
    PostgreSQL and MariaDB databases, so only these names say what this run left."""
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            sql = _OBJECTS[engine.dialect.name]
            return {str(name) for (name,) in c.execute(text(sql), {"p": prefix})}
    finally:
        engine.dispose()


def _run_prefix(tables: str) -> str:
    """``poolwatch_demo_<run id>_`` from the headline's table names."""
    customers, orders = tables.split(", ")
    m = re.fullmatch(r"(poolwatch_demo_[0-9a-f]{8}_)customers", customers)
    assert m and orders == f"{m[1]}orders", tables
    return m[1]


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def user_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the user's, with a table of their own the demo must leave alone."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.db'}"
    elif request.param == "postgresql":
        url = str(request.getfixturevalue("postgres_url"))
    else:
        url = MYSQL
        try:
            import pymysql

            with pymysql.connect(host="127.0.0.1", port=3306, user="root", connect_timeout=3):
                pass
        except Exception:
            unavailable(f"MariaDB/MySQL at POOLWATCH_TEST_MYSQL ({MYSQL})")
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text(f"CREATE TABLE IF NOT EXISTS {KEEP} (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    yield url
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text(f"DROP TABLE IF EXISTS {KEEP}"))
    engine.dispose()


class Demo:
    """``poolwatch demo`` in a subprocess, its output read as it comes."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "poolwatch", "demo", "--no-tui", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
        )  # fmt: skip
        self.lines: list[str] = []
        self._headline = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if HEADLINE.match(line.rstrip("\n")):
                    self._headline.set()
        self._headline.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def headline(self) -> re.Match[str]:
        """The line that names the tables and the metrics URL (waits for it)."""
        self._headline.wait(60)
        m = HEADLINE.search(self.output)
        assert m, self.output
        return m

    def finish(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(10)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)


@pytest.fixture
def run_demo(tmp_path: Path) -> Iterator[type[Demo]]:
    started: list[Demo] = []

    def start(*args: str) -> Demo:
        d = Demo(*args, cwd=tmp_path)
        started.append(d)
        return d

    yield start  # type: ignore[misc]
    for d in started:
        d.kill()


def _workload_errors(output: str) -> dict[str, int]:
    final = output.strip().splitlines()[-1]
    assert final.startswith("done: "), output
    listed = final.split("workload errors: ", 1)[1]
    if listed == "none":
        return {}
    return {name: int(n) for name, n in (e.split() for e in listed.split(", "))}


@pytest.mark.slow
def test_demo_on_the_users_database_serves_its_port_and_leaves_nothing(
    user_db: str, run_demo: type[Demo]
) -> None:
    d = run_demo("--db", user_db, "--duration", "4", "--port", "0")
    m = d.headline()
    port, prefix = int(m["port"]), _run_prefix(m["tables"])
    orders = f"{prefix}orders"
    assert {f"{prefix}customers", orders} <= _objects(user_db, prefix)
    last: Samples = {}
    while d.proc.poll() is None:
        try:
            s = _scrape(port)
        except OSError:
            break  # the demo finished and stopped serving
        if s:
            last = s
            assert _value(s, "db_client_connection_max") == 7
        time.sleep(0.25)
    assert d.finish() == 0, d.output
    assert _objects(user_db, prefix) == set()
    assert KEEP in _tables(user_db)
    # The workload's writes went in, numbered by the orders table's identity/autoincrement.
    inserts = _matching(last, "db_client_operation_duration_seconds_count",
                        db_operation_name="INSERT", db_query_summary=f"INSERT {orders}")  # fmt: skip
    assert [labels["error_type"] for labels, _ in inserts] == [""], inserts
    assert inserts[0][1] > 0
    assert "IntegrityError" not in d.output
    errors = _workload_errors(d.output)
    assert set(errors) <= {"TimeoutError"}, errors  # only the burst's pool timeouts


def _matching(samples: Samples, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """The series of ``name`` that carry these labels (and any others)."""
    out = []
    for (n, ls), v in samples.items():
        if n == name and labels.items() <= dict(ls).items():
            out.append((dict(ls), v))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_demo_drops_its_tables(
    postgres_url: str, run_demo: type[Demo], signum: signal.Signals
) -> None:
    d = run_demo("--db", postgres_url, "--duration", "0", "--port", "0")
    m = d.headline()
    port, prefix = int(m["port"]), _run_prefix(m["tables"])
    assert {f"{prefix}customers", f"{prefix}orders"} <= _objects(postgres_url, prefix)
    while not _scrape(port):  # the pool is instrumented: the workload runs
        time.sleep(0.1)
    d.proc.send_signal(signum)
    assert d.finish() == 0, d.output
    assert d.output.strip().splitlines()[-1].startswith("done: ")
    assert _objects(postgres_url, prefix) == set()


@pytest.mark.slow
def test_a_setting_refused_after_the_tables_exist_still_drops_them(
    postgres_url: str, run_demo: type[Demo], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOLWATCH_MAX_QUERY_SUMMARIES", "many")
    d = run_demo("--db", postgres_url, "--duration", "5", "--port", "0")
    prefix = _run_prefix(d.headline()["tables"])
    assert d.finish() == 2, d.output
    assert "POOLWATCH_MAX_QUERY_SUMMARIES" in d.lines[-1]
    assert d.lines[-1].startswith("poolwatch demo: ")
    assert _objects(postgres_url, prefix) == set()


def test_an_explicit_port_that_is_taken_is_refused(run_demo: type[Demo]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = run_demo("--duration", "5", "--port", str(port))
        assert d.finish() == 2, d.output
    assert d.lines == [
        f"poolwatch demo: cannot serve metrics on 127.0.0.1:{port} (Address already in use);"
        " choose another --port, or leave --port out to use a free one"
    ]


@pytest.mark.slow
def test_the_default_port_taken_means_a_free_one_printed(run_demo: type[Demo]) -> None:
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", demo.DEFAULT_PORT))
            taken.listen()
        except OSError:
            pass  # someone else holds it: the same case
        d = run_demo("--duration", "2")
        port = int(d.headline()["port"])
        assert port != demo.DEFAULT_PORT
        assert (
            d.lines[0]
            == "poolwatch demo: port 9464 is taken; serving metrics on a free port instead"
        )
        while not (s := _scrape(port)):
            time.sleep(0.1)
        assert _value(s, "db_client_connection_max") == 7
        assert d.finish() == 0, d.output


# --- the live view, rendered as a terminal would show it -----------------------------------


def _render(
    phase: demo.Phase, row: demo.PoolRow, panel: demo.LogPanel | None = None, width: int = 200
) -> list[str]:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    title = "poolwatch demo — metrics at http://127.0.0.1:9464/metrics\nsqlite:///demo.db"
    console.print(demo.render_rich(12.0, 60.0, phase, row, title, panel))
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


QUIET = demo.PoolRow(used=0, idle=0, max=7, waiting=0, timeouts=0, leaked=0, wait_p99=0.0, window=5)
BUSY = demo.PoolRow(
    used=7, idle=0, max=7, waiting=17, timeouts=1234, leaked=1, wait_p99=1.016, window=5
)


def test_the_live_view_keeps_its_size_whatever_the_phase_and_the_numbers() -> None:
    assert demo.VIEW_WIDTH <= 80  # a default terminal
    shapes = set()
    for phase in demo.PHASES:
        for row in (QUIET, BUSY):
            for width in (80, 200):
                lines = _render(phase, row, demo.LogPanel(), width)
                shapes.add(tuple(len(line) for line in lines))
                header = next(line for line in lines if line.startswith("┃"))
                assert [h.strip() for h in header.strip("┃").split("┃")] == [
                    "used/max", "", "idle", "waiting", "wait p99 (5 s)", "timeouts", "leaked",
                ]  # fmt: skip
    assert len(shapes) == 1
    (shape,) = shapes
    assert set(shape) == {demo.VIEW_WIDTH}
    for row in (QUIET, BUSY):
        assert len({len(demo.render_plain(12.0, 60.0, p, row)) for p in demo.PHASES}) == 1


def test_the_live_view_states_the_p99_window() -> None:
    lines = _render(demo.PHASES[1], BUSY)
    header = next(line for line in lines if line.startswith("┃"))
    assert "wait p99 (5 s)" in header
    row = next(line for line in lines if line.startswith("│"))
    assert "1016 ms" in row
    assert any(
        "wait p99 (5 s): the 99th percentile of checkout waits over the last 5 s" in line
        for line in lines
    )
    assert "wait p99 (5 s)  1016 ms" in demo.render_plain(12.0, 60.0, demo.PHASES[1], BUSY)


def test_log_records_show_in_a_panel_beneath_the_table() -> None:
    panel = demo.LogPanel(lines=6)
    empty = _render(demo.PHASES[2], QUIET, panel)
    logger = logging.getLogger("poolwatch.test_demo")
    logger.addHandler(panel)
    try:
        logger.warning(
            "poolwatch: connection of pool 'demo' held for 1.5 s, longer than leak_threshold=1.5"
            " s. checked out at (most recent call last):\n"
            '  File "threading.py", line 982, in run\n    self._target()\n'
            '  File "poolwatch/demo.py", line 290, in _leaker\n    conn = self.engine.connect()'
        )
    finally:
        logger.removeHandler(panel)
    lines = _render(demo.PHASES[2], QUIET, panel)
    assert len(lines) == len(empty)  # the panel's height is fixed: the view does not jump
    bottom = max(i for i, line in enumerate(lines) if line.startswith("└"))
    shown = [line.strip("│ ") for line in lines[bottom + 1 :]]
    warning = next(i for i, line in enumerate(shown) if "held for 1.5 s" in line)
    assert "WARNING poolwatch: connection of pool 'demo' held for 1.5 s" in shown[warning]
    assert shown[warning + 1 : warning + 3] == [
        'File "poolwatch/demo.py", line 290, in _leaker',
        "conn = self.engine.connect()",
    ]


def test_a_repeated_log_record_is_counted_not_repeated() -> None:
    panel = demo.LogPanel(lines=4)
    logger = logging.getLogger("poolwatch.test_demo")
    logger.addHandler(panel)
    logger.setLevel(logging.INFO)
    try:
        logger.info("phase: %s", "leak")
        logger.info("phase: %s", "slow queries")  # another phase, not a repeat
        for took in (1.0, 1.002, 1.001):
            logger.warning("slow statement: SELECT took %.3f s", took)
    finally:
        logger.removeHandler(panel)
        logger.setLevel(logging.NOTSET)
    stamp = r"\d\d:\d\d:\d\d"
    blank, leak, phase, slow = panel.rendered()
    assert blank == ("", "")
    assert re.fullmatch(f"{stamp} INFO phase: leak", leak[1])
    assert re.fullmatch(f"{stamp} INFO phase: slow queries", phase[1])
    assert re.fullmatch(rf"\(×3\) {stamp} WARNING slow statement: SELECT took 1\.001 s", slow[1])


@pytest.mark.scenario
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_demo_runs_dry_and_recovers(
    db: str, request: pytest.FixtureRequest, run_demo: type[Demo]
) -> None:
    url = [] if db == "sqlite" else ["--db", str(request.getfixturevalue("postgres_url"))]
    port = free_port()
    d = run_demo(*url, "--duration", "20", "--port", str(port))
    m = d.headline()
    assert int(m["port"]) == port
    prefix = _run_prefix(m["tables"])
    seen_waiting = seen_leak = 0.0
    scrapes = 0
    deadline = time.monotonic() + 40
    while d.proc.poll() is None and time.monotonic() < deadline:
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
    assert d.finish(30) == 0, d.output
    if url:
        assert _objects(url[1], prefix) == set()
    output = d.output
    assert scrapes >= 20  # about four a second over the 20 s run
    assert seen_waiting >= 5  # the burst phase queued callers
    assert seen_leak == 1  # the leak phase's forgotten connection
    for phase in ("steady", "burst", "leak", "slow queries", "recovery"):
        assert f"phase: {phase}" in output
    assert "slow statement on pool 'demo'" in output
    assert "held for" in output and "longer than leak_threshold" in output
    final = output.strip().splitlines()[-1]
    assert final.startswith("done: ") and "final used 0, waiting 0" in final
    timeouts = int(final.split()[1])
    assert timeouts > 0  # checkouts timed out during the burst
    assert _workload_errors(output) == {"TimeoutError": timeouts}


def test_the_view_reads_the_pool_as_poolwatch_top_does(tmp_path: Path) -> None:
    """Three connections out of a pool of three, a fourth caller timed out after its 0.2 s."""
    from prometheus_client import CollectorRegistry
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    import poolwatch

    registry = CollectorRegistry()
    engine = create_engine(
        f"sqlite:///{tmp_path / 'view.db'}", pool_size=2, max_overflow=1, pool_timeout=0.2
    )
    name = f"demo-view-{os.getpid()}"
    handle = poolwatch.instrument(
        engine, name=name, registry=registry, port=None, pool_buckets=(0.1, 0.3, 1.0)
    )
    try:
        view = demo.PoolView(registry, name)
        assert view.row() == demo.PoolRow(0, 0, 3, 0, 0, 0, 0.0, demo.WAIT_WINDOW)
        held = [engine.connect() for _ in range(3)]
        with pytest.raises(PoolTimeout):
            engine.connect()
        row = view.row()
        for c in held:
            c.close()
    finally:
        handle.uninstrument()
        engine.dispose()
    assert row == demo.PoolRow(
        used=3, idle=0, max=3, waiting=0, timeouts=1, leaked=0, wait_p99=row.wait_p99, window=5
    )
    # Three waits under 0.1 s and the timed-out one: the timeout is a bound of its own (0.2),
    # and the wait ends a hair before or after it. The 99th percentile's rank, 3.96, is 96 %
    # into (0.1, 0.2] or into (0.2, 0.3].
    assert row.wait_p99 in (pytest.approx(0.196), pytest.approx(0.296))


def test_a_ctrl_c_while_the_workload_starts_stops_what_had_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signal can land between two ``Thread.start()`` calls (CI saw it): closing then must
    stop the threads that run and skip the ones that never started, not raise."""
    engine = create_engine(f"sqlite:///{tmp_path / 'start.db'}")
    tables = demo.DemoTables()
    tables.create(engine)
    workload = demo.Workload(engine, tables)
    real_start = threading.Thread.start
    started: list[threading.Thread] = []

    def start(self: threading.Thread) -> None:
        if len(started) == 2:
            raise KeyboardInterrupt
        started.append(self)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(KeyboardInterrupt):
        workload.start()
    monkeypatch.undo()
    workload.close()
    assert [t.is_alive() for t in started] == [False, False]
    engine.dispose()
