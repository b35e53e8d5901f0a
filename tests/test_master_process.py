"""What poolwatch does in a pre-fork server's master, with real processes: a held sampler (uWSGI's
master runs no poolwatch thread) and the private directory's lifetime."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from poolwatch.core.sampler import Job, Sampler

ctx = multiprocessing.get_context("fork")
ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 30.0


def until(read, wanted, deadline: float = DEADLINE):  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    last = read()
    while last != wanted and time.monotonic() < end:
        time.sleep(0.02)
        last = read()
    return last


def _runs(s: Sampler) -> tuple[Job, threading.Event]:
    ran = threading.Event()
    job = Job("probe", lambda _now: ran.set(), lambda: 0.05, at_exit=True)
    s.add(job)
    return job, ran


def test_a_held_process_starts_no_thread_and_runs_no_job_at_exit() -> None:
    s = Sampler()
    s.hold()
    _job, ran = _runs(s)
    assert s.held() and not s.running()
    s._at_exit()
    assert not ran.is_set()


def test_release_starts_the_thread() -> None:
    s = Sampler()
    s.hold()
    job, ran = _runs(s)
    s.release()
    assert not s.held()
    assert ran.wait(DEADLINE)
    assert s.running()
    s.remove(job)
    assert until(s.running, False) is False


def test_a_running_thread_ends_when_the_process_is_held() -> None:
    s = Sampler()
    job, ran = _runs(s)
    assert ran.wait(DEADLINE)
    s.hold()
    assert until(s.running, False) is False
    s.remove(job)


def _child(s: Sampler, ran: threading.Event, conn) -> None:  # type: ignore[no-untyped-def]
    s._after_fork_in_child()  # what the fork handler does for the process's sampler
    ran.clear()
    conn.send((s.held(), ran.wait(DEADLINE)))


def test_a_child_of_a_held_process_runs_the_jobs() -> None:
    s = Sampler()
    s.hold()
    _job, ran = _runs(s)
    a, b = ctx.Pipe()
    p = ctx.Process(target=_child, args=(s, ran, b), daemon=True)
    p.start()
    assert a.poll(DEADLINE)
    assert a.recv() == (False, True)
    p.join(DEADLINE)
    assert not s.running()  # still held here


MASTER = textwrap.dedent(
    """
    import os, sys
    from poolwatch.backends.multiprocess import service

    path = service.prepare_master()
    service.remove_after_the_service()
    if os.fork() == 0:  # a worker: lives until the test closes its stdin
        sys.stdin.buffer.read()
        os._exit(0)
    print(path, flush=True)
    os._exit(0)  # as uWSGI's master: no Python at exit
    """
)


def _environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMETHEUS_", "POOLWATCH_"))}
    env.pop("prometheus_multiproc_dir", None)
    env.update(PYTHONPATH=str(ROOT / "exporter") + os.pathsep + str(ROOT), **extra)
    return env


def test_the_private_directory_goes_when_the_last_process_of_the_service_has_exited(
    tmp_path: Path,
) -> None:
    env = _environ(TMPDIR=str(tmp_path))
    with subprocess.Popen([sys.executable, "-c", MASTER], env=env, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE) as master:  # fmt: skip
        assert master.stdout is not None and master.stdin is not None
        private = Path(master.stdout.readline().decode().strip())
        assert private.parent == tmp_path and private.name.startswith("poolwatch-multiproc-")
        assert master.wait(DEADLINE) == 0
        time.sleep(0.5)  # the master has gone; its worker has not
        assert private.is_dir()
        master.stdin.close()  # the worker exits
        assert until(private.is_dir, False) is False


def test_a_re_executed_master_makes_a_directory_of_its_own(tmp_path: Path) -> None:
    old = tmp_path / "poolwatch-multiproc-old"
    old.mkdir()
    env = _environ(TMPDIR=str(tmp_path), PROMETHEUS_MULTIPROC_DIR=str(old),
                   POOLWATCH_PRIVATE_MULTIPROC_DIR=str(old))  # fmt: skip
    code = "from poolwatch.backends.multiprocess import service; print(service.prepare_master())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    new = Path(out.stdout.decode().strip())
    assert new != old and new.parent == tmp_path and new.is_dir()
    # A directory the user set is theirs: kept as it is.
    mine = tmp_path / "mine"
    env = _environ(TMPDIR=str(tmp_path), PROMETHEUS_MULTIPROC_DIR=str(mine))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    assert Path(out.stdout.decode().strip()) == mine
