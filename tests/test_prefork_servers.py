"""Real pre-fork servers, the real PostgreSQL: one scrape shows the whole service.

Each test starts a real server (gunicorn, uvicorn, Celery, uWSGI) with the documented one line,
holds connections checked out in its workers through PostgreSQL advisory locks the test owns, and
reads exact totals from one scrape. Conditions are awaited with a deadline and then asserted
exactly: nothing here asserts on a duration.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.services import IN_CI, free_port, unavailable, wait_for_port

pytestmark = pytest.mark.scenario

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POOL = "db_client_connection_pool_name"
DEADLINE = 60.0


def scrape(port: int, path: str = "/metrics") -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


class Reading:
    def __init__(self, port: int, pool: str, path: str = "/metrics") -> None:
        self.port, self.pool, self.path = port, pool, path

    def __call__(self, name: str, **labels: str) -> float | None:
        return scrape(self.port, self.path).get((name, frozenset({POOL: self.pool, **labels}.items())))

    def used(self) -> float | None:
        return self("db_client_connection_count", db_client_connection_state="used")

    def waits(self) -> float | None:
        return self("db_client_connection_wait_time_seconds_count")


def until(read: Callable[[], Any], wanted: Any, what: str) -> Any:
    """Read until ``read()`` equals ``wanted`` or the deadline passes; returns the last value
    (the caller asserts it)."""
    deadline = time.monotonic() + DEADLINE
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            last = read()
            if last == wanted:
                return last
        time.sleep(0.1)
    return last


class Server:
    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stray children
        self._out.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def server(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[Server]:
    srv = Server(cmd, env, log)
    try:
        yield srv
    except BaseException:
        srv.stop()
        print(srv.output()[-6000:])
        raise
    srv.stop()


@contextlib.contextmanager
def advisory_lock(url: str, key: int) -> Iterator[None]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
        c.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            c.execute("SELECT pg_advisory_unlock(%s)", (key,))


def waiting_pids(url: str, app: str) -> list[int]:
    """Worker pids whose connection waits on an advisory lock (the holders), from PostgreSQL."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
        rows = c.execute(
            "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s"
            " AND wait_event_type = 'Lock'", (app + "-%",),
        ).fetchall()  # fmt: skip
    return sorted(int(r[0].rsplit("-", 1)[1]) for r in rows)


def fire(url: str, n: int) -> list[threading.Thread]:
    def get() -> None:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=120).read()

    threads = [threading.Thread(target=get, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read().decode()


@pytest.fixture
def env(postgres_url: str, tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PROMETHEUS_", "POOLWATCH_"))}
    e.pop("prometheus_multiproc_dir", None)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    e.update(
        POOLWATCH_TEST_PG=postgres_url,
        PW_POOL_NAME="pf-" + uuid.uuid4().hex[:8],
        PW_APP="pf" + uuid.uuid4().hex[:8],
        TMPDIR=str(tmp),
        PYTHONPATH=str(ROOT),
    )
    return e


def gunicorn(tmp_path: Path, *args: str) -> list[str]:
    """gunicorn with the documented one line, its control socket in the test's own folder."""
    return [tool("gunicorn"), "-c", "python:poolwatch.gunicorn", "--control-socket",
            str(tmp_path / "gunicorn.ctl"), *args]  # fmt: skip


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        unavailable(f"{name} in the test venv (pip install -e '.[test]')")
    return str(path)


def key() -> int:
    return int(uuid.uuid4().int % 2_000_000_000)


# --- gunicorn --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("worker_class", "workers", "threads", "holds"),
    [("sync", 4, 1, 4), ("gthread", 2, 4, 4)],
    ids=["sync-4", "gthread-2x4"],
)
def test_gunicorn_one_scrape_is_the_sum_of_every_worker(
    env: dict[str, str], tmp_path: Path, postgres_url: str,
    worker_class: str, workers: int, threads: int, holds: int,
) -> None:  # fmt: skip
    app_port, metrics_port = free_port(), free_port()
    env["POOLWATCH_PORT"] = str(metrics_port)
    cmd = gunicorn(tmp_path, "-w", str(workers),
           "-k", worker_class, "--threads", str(threads), "-b", f"127.0.0.1:{app_port}",
           "tests.prefork.wsgi_app:app")  # fmt: skip
    read = Reading(metrics_port, env["PW_POOL_NAME"])
    tmp = Path(env["TMPDIR"])
    with server(cmd, env, tmp_path / "gunicorn.log"):
        wait_for_port(app_port, DEADLINE)
        wait_for_port(metrics_port, DEADLINE)
        # The master made the private directory; every worker's pool is in the scrape.
        assert [p.name[:20] for p in tmp.iterdir()] == ["poolwatch-multiproc-"]
        assert until(lambda: read("db_client_connection_max"), workers * 5, "max") == workers * 5
        k = key()
        with advisory_lock(postgres_url, k):
            clients = fire(f"http://127.0.0.1:{app_port}/hold?key={k}", holds)
            assert until(read.used, holds, "used") == holds
            assert len(waiting_pids(postgres_url, env["PW_APP"])) == holds  # the truth
            assert read("db_client_connection_pending_requests") == 0
            assert read("db_client_connection_max") == workers * 5
        for c in clients:
            c.join(60)
        for _ in range(10):
            get(f"http://127.0.0.1:{app_port}/query")
        assert until(read.waits, holds + 10, "waits") == holds + 10
        # Sampled about once a second: a flush can fall between the last checkout and its
        # checkin.
        assert until(read.used, 0, "used") == 0
        uses = until(lambda: read("db_client_connection_use_time_seconds_count"), holds + 10,
                     "uses")  # fmt: skip
        assert uses == holds + 10
    # The master removed its private directory at exit.
    assert list(tmp.iterdir()) == []


def test_gunicorn_kill_9_of_a_worker_under_load(
    env: dict[str, str], tmp_path: Path, postgres_url: str
) -> None:
    app_port, metrics_port = free_port(), free_port()
    env["POOLWATCH_PORT"] = str(metrics_port)
    cmd = gunicorn(tmp_path, "-w", "4",
           "-b", f"127.0.0.1:{app_port}", "tests.prefork.wsgi_app:app")  # fmt: skip
    read = Reading(metrics_port, env["PW_POOL_NAME"])
    with server(cmd, env, tmp_path / "gunicorn.log"):
        wait_for_port(app_port, DEADLINE)
        wait_for_port(metrics_port, DEADLINE)
        assert until(lambda: read("db_client_connection_max"), 20, "max") == 20
        k = key()
        with advisory_lock(postgres_url, k):
            clients = fire(f"http://127.0.0.1:{app_port}/hold?key={k}", 4)
            assert until(read.used, 4, "used") == 4
            assert until(read.waits, 4, "waits") == 4
            pids = until(lambda: len(waiting_pids(postgres_url, env["PW_APP"])), 4, "holders")
            assert pids == 4
            victim = waiting_pids(postgres_url, env["PW_APP"])[0]
            os.kill(victim, signal.SIGKILL)
            # Its live gauges go at the next scrape; what it counted stays.
            assert until(read.used, 3, "used after kill") == 3
            assert read.waits() == 4
            # gunicorn replaces the worker; the service's limit is back.
            assert until(lambda: read("db_client_connection_max"), 20, "max") == 20
        for c in clients:
            c.join(60)
        assert until(read.used, 0, "used") == 0
        assert read.waits() == 4
        assert read("db_client_connection_use_time_seconds_count") == 3


def test_gunicorn_max_requests_recycling_keeps_the_files_bounded(
    env: dict[str, str], tmp_path: Path
) -> None:
    app_port, metrics_port = free_port(), free_port()
    mp = tmp_path / "multiproc"
    mp.mkdir()
    env.update(POOLWATCH_PORT=str(metrics_port), PROMETHEUS_MULTIPROC_DIR=str(mp))
    cmd = gunicorn(tmp_path, "-w", "2", "--max-requests",
           "20", "-b", f"127.0.0.1:{app_port}", "tests.prefork.wsgi_app:app")  # fmt: skip
    read = Reading(metrics_port, env["PW_POOL_NAME"])
    requests = 300
    with server(cmd, env, tmp_path / "gunicorn.log"):
        wait_for_port(app_port, DEADLINE)
        wait_for_port(metrics_port, DEADLINE)
        pids = {get(f"http://127.0.0.1:{app_port}/query") for _ in range(requests)}
        assert len(pids) >= requests // 20  # the workers really were recycled
        assert until(read.waits, requests, "waits") == requests
        assert read("db_client_operation_duration_seconds_count", db_system_name="postgresql",
                    db_operation_name="SELECT", db_query_summary="SELECT pg_database",
                    error_type="") == requests  # fmt: skip
        # The files of the live workers and one archive per type, however many workers ran:
        # each live worker has at most counter, histogram and two gauge files.
        files = sorted(p.name for p in mp.glob("*.db"))
        archives = [f for f in files if "archive" in f]
        assert archives == ["counter_poolwatch-archive.db", "histogram_poolwatch-archive.db"]
        assert len(files) - len(archives) <= 2 * 4, files
    # A graceful stop: every worker's counts are in the archive, no worker's files are left.
    assert sorted(p.name for p in mp.glob("*.db")) == archives


def test_gunicorn_preload_each_worker_counts_its_own_pool(
    env: dict[str, str], tmp_path: Path, postgres_url: str
) -> None:
    app_port, metrics_port = free_port(), free_port()
    env["POOLWATCH_PORT"] = str(metrics_port)
    # The user's own configuration file, with README's one import line.
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("from poolwatch.gunicorn import *  # noqa: F403\n\npreload_app = True\n"
                    "workers = 2\n")  # fmt: skip
    cmd = [tool("gunicorn"), "-c", str(conf), "--control-socket", str(tmp_path / "g.ctl"),
           "-b", f"127.0.0.1:{app_port}", "tests.prefork.wsgi_app:app"]  # fmt: skip
    read = Reading(metrics_port, env["PW_POOL_NAME"])
    with server(cmd, env, tmp_path / "gunicorn.log"):
        wait_for_port(app_port, DEADLINE)
        wait_for_port(metrics_port, DEADLINE)
        # The master's pool (instrumented before the fork) and each worker's: three pools of 5.
        assert until(lambda: read("db_client_connection_max"), 15, "max") == 15
        k = key()
        with advisory_lock(postgres_url, k):
            clients = fire(f"http://127.0.0.1:{app_port}/hold?key={k}", 2)
            assert until(read.used, 2, "used") == 2
            assert read("db_client_connection_max") == 15
            assert until(read.waits, 2, "waits") == 2
        for c in clients:
            c.join(60)
        assert until(read.used, 0, "used") == 0
        assert read.waits() == 2
        assert read("db_client_connection_use_time_seconds_count") == 2


def test_gunicorn_without_the_set_up_warns_once_per_worker(
    env: dict[str, str], tmp_path: Path
) -> None:
    app_port = free_port()
    cmd = [tool("gunicorn"), "-w", "2", "--control-socket", str(tmp_path / "g.ctl"),
           "-b", f"127.0.0.1:{app_port}", "tests.prefork.wsgi_app:app"]  # fmt: skip
    with server(cmd, env, tmp_path / "gunicorn.log") as srv:
        wait_for_port(app_port, DEADLINE)
        for _ in range(4):
            get(f"http://127.0.0.1:{app_port}/query")
        warned = until(lambda: srv.output().count("runs under a pre-fork server"), 2, "warnings")
    assert warned == 2  # one per worker, not one per request or per pool
    assert "python:poolwatch.gunicorn" in srv.output()


# --- uvicorn ---------------------------------------------------------------------------------


def test_uvicorn_workers_with_an_async_engine(
    env: dict[str, str], tmp_path: Path, postgres_url: str
) -> None:
    app_port, metrics_port = free_port(), free_port()
    mp = tmp_path / "multiproc"
    mp.mkdir()
    env.update(POOLWATCH_PORT=str(metrics_port), PROMETHEUS_MULTIPROC_DIR=str(mp))
    cmd = [tool("uvicorn"), "--workers", "2", "--port", str(app_port), "--host", "127.0.0.1",
           "--log-level", "warning", "tests.prefork.asgi_app:app"]  # fmt: skip
    on_port = Reading(metrics_port, env["PW_POOL_NAME"])
    on_app = Reading(app_port, env["PW_POOL_NAME"])
    with server(cmd, env, tmp_path / "uvicorn.log"):
        wait_for_port(app_port, DEADLINE)
        wait_for_port(metrics_port, DEADLINE)
        assert until(lambda: on_app("db_client_connection_max"), 10, "max") == 10
        k = key()
        with advisory_lock(postgres_url, k):
            clients = fire(f"http://127.0.0.1:{app_port}/hold?key={k}", 4)
            assert until(on_app.used, 4, "used") == 4
            # Whichever worker answers, and on POOLWATCH_PORT (served by one of them): the same.
            assert [on_app.used() for _ in range(4)] == [4, 4, 4, 4]
            assert on_port.used() == 4
        for c in clients:
            c.join(60)
        assert until(on_port.waits, 4, "waits") == 4
        assert on_app.waits() == 4


# --- Celery ----------------------------------------------------------------------------------


def _redis_up() -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 6379), 2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    return False


def test_celery_prefork_pool(env: dict[str, str], tmp_path: Path, postgres_url: str) -> None:
    if not _redis_up():
        unavailable("Redis at 127.0.0.1:6379")
    from celery import Celery

    metrics_port = free_port()
    queue = "pw-" + uuid.uuid4().hex[:10]
    broker = "redis://127.0.0.1:6379/0"
    env.update(POOLWATCH_PORT=str(metrics_port), PW_BROKER=broker, PW_QUEUE=queue)
    cmd = [tool("celery"), "-A", "tests.prefork.celery_app", "worker", "--pool", "prefork",
           "-c", "2", "-O", "fair", "-Q", queue, "--without-gossip", "--without-mingle",
           "--without-heartbeat", "-l", "warning", "-n", f"{queue}@%h"]  # fmt: skip
    read = Reading(metrics_port, env["PW_POOL_NAME"])
    client = Celery(broker=broker)
    tmp = Path(env["TMPDIR"])
    try:
        with server(cmd, env, tmp_path / "celery.log"):
            wait_for_port(metrics_port, DEADLINE)
            # The main process's pool (made at import, before the fork) and each child's.
            assert until(lambda: read("db_client_connection_max"), 15, "max") == 15
            k = key()
            with advisory_lock(postgres_url, k):
                for _ in range(2):
                    client.send_task("pw.hold", args=[k], queue=queue)
                assert until(read.used, 2, "used") == 2
                assert until(read.waits, 2, "waits") == 2
            for _ in range(5):
                client.send_task("pw.query", queue=queue)
            assert until(read.waits, 7, "waits") == 7
            assert until(read.used, 0, "used") == 0  # sampled: may trail the last checkin
        assert list(tmp.iterdir()) == []  # the private directory went with the worker
    finally:
        client.close()


# --- uWSGI -----------------------------------------------------------------------------------


def uwsgi_binary() -> Path:
    """The venv's uwsgi; a failure in CI, where the test extra must have built it."""
    uwsgi = BIN / "uwsgi"
    if not uwsgi.exists():
        if IN_CI:
            pytest.fail("uwsgi is in the test extra and did not install")
        pytest.skip("uwsgi did not build here")
    return uwsgi


def uwsgi_command(uwsgi: Path, app_port: int, *flags: str) -> list[str]:
    """uWSGI serving the test app (poolwatch's one line first) on ``app_port``, with ``flags``."""
    return [str(uwsgi), "--http-socket", f"127.0.0.1:{app_port}", *flags,
            "--module", "tests.prefork.wsgi_uwsgi:app", "--home", str(Path(sys.prefix))]  # fmt: skip


def uwsgi_workers(master: int) -> list[int]:
    """The uWSGI processes the master forked (its other children are not uWSGI)."""
    with open(f"/proc/{master}/task/{master}/children") as f:
        children = [int(c) for c in f.read().split()]
    workers = []
    for pid in children:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as f:
            if f.read().strip() == "uwsgi":
                workers.append(pid)
    return workers


def test_uwsgi_processes(env: dict[str, str], tmp_path: Path, postgres_url: str) -> None:
    uwsgi = uwsgi_binary()
    app_port, metrics_port = free_port(), free_port()
    env["POOLWATCH_PORT"] = str(metrics_port)
    cmd = uwsgi_command(uwsgi, app_port, "--master", "--processes", "2", "--enable-threads",
                        "--py-call-osafterfork", "--die-on-term", "--need-app",
                        "--disable-logging")  # fmt: skip
    read = Reading(metrics_port, env["PW_POOL_NAME"])
    with server(cmd, env, tmp_path / "uwsgi.log") as srv:
        wait_for_port(app_port, DEADLINE)
        wait_for_port(metrics_port, DEADLINE)
        # The workers' pools: poolwatch runs no thread in uWSGI's master (a thread there can hang
        # the next worker forked; poolwatch.uwsgi), so the pool it instrumented before the fork
        # writes nothing (and can serve no request).
        assert until(lambda: read("db_client_connection_max"), 10, "max") == 10
        # Both idle workers write their gauges, and the master none (a hung worker and the
        # master's pool also read 10).
        workers = until(lambda: len(uwsgi_workers(srv.proc.pid)), 2, "workers")
        assert workers == 2
        (private,) = Path(env["TMPDIR"]).iterdir()
        assert sorted(p.name for p in private.glob("gauge_livesum_*.db")) == sorted(
            f"gauge_livesum_{pid}.db" for pid in uwsgi_workers(srv.proc.pid)
        )
        k = key()
        with advisory_lock(postgres_url, k):
            # One request at a time: two concurrent ones were seen served one after the other
            # here (uWSGI 2.0.31, two processes of one core), which is uWSGI's business.
            clients = fire(f"http://127.0.0.1:{app_port}/hold?key={k}", 1)
            assert until(read.used, 1, "used") == 1
            assert read("db_client_connection_max") == 10
        for c in clients:
            c.join(60)
        for _ in range(5):
            get(f"http://127.0.0.1:{app_port}/query")
        assert until(read.waits, 6, "waits") == 6
        assert until(read.used, 0, "used") == 0  # sampled: may trail the last checkin
    # The private directory goes when the last process has exited (uWSGI's master runs no
    # Python at exit: a process of poolwatch's removes it a moment after the master).
    tmp = Path(env["TMPDIR"])
    assert until(lambda: list(tmp.iterdir()), [], "private directory removed") == []


@pytest.mark.parametrize("mode", ["lazy-apps", "no-master"])
def test_uwsgi_modes_poolwatch_cannot_aggregate_say_so_and_serve_on(
    env: dict[str, str], tmp_path: Path, mode: str
) -> None:
    """lazy-apps (each worker imports the app) and no --master (no post-fork hook): one WARNING
    saying what to do, and the application serves its requests as without poolwatch."""
    uwsgi = uwsgi_binary()
    app_port = free_port()
    extra = ["--master", "--lazy-apps", "--processes", "2"] if mode == "lazy-apps" else []
    cmd = uwsgi_command(uwsgi, app_port, *extra, "--enable-threads", "--die-on-term",
                        "--need-app", "--disable-logging")  # fmt: skip
    with server(cmd, env, tmp_path / "uwsgi.log") as srv:
        wait_for_port(app_port, DEADLINE)
        get(f"http://127.0.0.1:{app_port}/query")
        wanted = "lazy-apps" if mode == "lazy-apps" else "without --master"
        assert until(lambda: wanted in srv.output(), True, "warning"), srv.output()[-3000:]
        assert "Traceback" not in srv.output()


def test_uwsgi_lazy_apps_with_a_directory_of_your_own_is_one_scrape(
    env: dict[str, str], tmp_path: Path
) -> None:
    """README's lazy-apps line: PROMETHEUS_MULTIPROC_DIR set in uWSGI's environment, and the two
    workers' pools are summed on the one port, with no warning."""
    uwsgi = uwsgi_binary()
    app_port, metrics_port = free_port(), free_port()
    (tmp_path / "metrics").mkdir()
    env["POOLWATCH_PORT"] = str(metrics_port)
    cmd = uwsgi_command(uwsgi, app_port, "--master", "--lazy-apps", "--processes", "2",
                        "--enable-threads", "--die-on-term", "--need-app", "--disable-logging",
                        "--env", f"PROMETHEUS_MULTIPROC_DIR={tmp_path / 'metrics'}")  # fmt: skip
    read = Reading(metrics_port, env["PW_POOL_NAME"])
    with server(cmd, env, tmp_path / "uwsgi.log") as srv:
        wait_for_port(app_port, DEADLINE)
        wait_for_port(metrics_port, DEADLINE)
        assert until(lambda: read("db_client_connection_max"), 10, "max") == 10
        for _ in range(3):
            get(f"http://127.0.0.1:{app_port}/query")
        assert until(read.waits, 3, "waits") == 3
        assert "lazy-apps" not in srv.output()


def test_the_tools_are_pinned() -> None:
    constraints = (ROOT / "constraints.txt").read_text()
    for name in ("gunicorn==", "uvicorn==", "celery==", "uWSGI==", "redis=="):
        assert name.lower() in constraints.lower(), name
