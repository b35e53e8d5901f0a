"""prometheus_client's multiprocess directory: where the values go, and keeping it small.

Every process writes its own files, ``{type}_{pid}.db`` (gauges ``gauge_{mode}_{pid}.db``), and a
scrape reads them all. prometheus_client's ``mark_process_dead`` removes only a dead process's
``live*`` gauge files; its counters and histograms stay, so with worker recycling the directory
grows by a few files per worker ever started and the scrape slows with it (client_python #204,
#275: thousands of files, 10-40 s scrapes). :func:`sweep` does what both need: a dead process's
live gauges are removed, and its counter, histogram and summary files are merged into one archive
file per type, so the files, and the scrape, depend on the live processes only. A sweep runs under
an exclusive lock on a file in the directory (sweeps from several processes take turns) and
poolwatch's collector reads under a shared one, so a scrape never sees a dead process's counts
twice or not at all while they move.

A process counts as dead when ``kill(pid, 0)`` says there is no such process or it is a zombie
(``/proc``): a worker killed with ``kill -9`` and reaped, or not yet reaped, both drop out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import struct
import threading
from collections.abc import Iterator
from typing import Any, cast

from prometheus_client import multiprocess, values

from poolwatch.core import lifecycle

# prometheus_client's multiprocess internals are untyped.
merge: Any = multiprocess.MultiProcessCollector.merge

__all__ = [
    "ARCHIVE_ID",
    "directory",
    "locked",
    "mark_process_dead",
    "pid_alive",
    "sweep",
    "value_class",
]

ARCHIVE_ID = "poolwatch-archive"
"""The part of an archive file's name where a pid would be: ``counter_poolwatch-archive.db``."""
LOCK_FILE = ".poolwatch.lock"
# counter_123.db, histogram_123.db, summary_123.db, gauge_livesum_123.db
_FILE = re.compile(r"^(counter|histogram|summary|gauge)_(?:([a-z]+)_)?(\d+)\.db$")
_MERGED_TYPES = ("counter", "histogram", "summary")

_value_class_lock = threading.Lock()
_thread_lock = threading.Lock()
_own_value_classes: dict[str, Any] = {}


def directory() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR`` (or the old lower-case spelling), if set and not empty."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    return path or None


def value_class() -> Any:
    """prometheus_client's mmap-backed value class for this process.

    prometheus_client's own when it is in multiprocess mode (it chose at import, from the same
    variable): then poolwatch's values share the process's files and their lock with the
    application's metrics, as two writers of one file would corrupt it. Otherwise (the variable
    was set after prometheus_client was imported, and the application's metrics are not in
    multiprocess mode) one of poolwatch's own, writing the same files by the same conventions.
    Either follows the process across ``fork()`` (it re-opens the files under the new pid).
    """
    if getattr(values.ValueClass, "_multiprocess", False):
        return values.ValueClass
    # One per directory: the class keeps its files open, and a process whose directory changed
    # (tests do) must not go on writing the old one.
    path = directory() or ""
    with _value_class_lock:
        cls = _own_value_classes.get(path)
        if cls is None:
            cls = _own_value_classes[path] = cast(Any, values).MultiProcessValue()
        return cls


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as e:
        if e.errno == errno.ESRCH:
            return False
        # EPERM: it exists, owned by someone else.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    # "pid (comm) S ...": the state follows the last ')' (comm may contain one).
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


@contextlib.contextmanager
def locked(path: str, *, exclusive: bool) -> Iterator[None]:
    """The sweep lock: a POSIX record lock on a file in the directory, between processes, and a
    thread lock within this one. Not ``flock``: a ``flock`` held while the process forks stays
    held by the child's copy of the descriptor (gunicorn's master forks a new worker while its
    HTTP thread reads), and every later sweep would wait for it forever; record locks are never
    inherited."""
    with _thread_lock:
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock


def _after_fork_in_child() -> None:
    global _thread_lock
    _thread_lock = threading.Lock()


lifecycle.after_fork_in_child(_after_fork_in_child)


def mark_process_dead(pid: int, path: str | None = None) -> None:
    """prometheus_client's ``mark_process_dead`` and more: ``pid``'s live gauges go, and its
    counters and histograms join the archive (for a server's "worker exited" hook)."""
    sweep(path, dead=[pid])


def sweep(path: str | None = None, *, dead: list[int] | None = None) -> int:
    """Remove the live gauge files and archive the other files of dead processes (those in
    ``dead``, or every process that :func:`pid_alive` says is gone); returns how many files
    went. Never touches this process's files, nor the gauge files of modes that keep a dead
    process's value (``all``, ``max``, ...: prometheus_client's meaning)."""
    path = path or directory()
    if not path or not os.path.isdir(path):
        return 0
    me = os.getpid()
    with locked(path, exclusive=True):
        gone: list[str] = []
        merge: dict[str, list[str]] = {t: [] for t in _MERGED_TYPES}
        verdict: dict[int, bool] = {}
        for name in os.listdir(path):
            m = _FILE.match(name)
            if m is None:
                continue
            typ, mode, pid_text = m.groups()
            pid = int(pid_text)
            if pid == me:
                continue
            if pid not in verdict:
                verdict[pid] = pid in dead if dead is not None else not pid_alive(pid)
            if not verdict[pid]:
                continue
            if typ == "gauge":
                if mode is not None and mode.startswith("live"):
                    gone.append(os.path.join(path, name))
            elif mode is None:
                merge[typ].append(os.path.join(path, name))
        for typ, files in merge.items():
            if files:
                _merge_into_archive(path, typ, files)
                gone.extend(files)
        for f in gone:
            with contextlib.suppress(FileNotFoundError):
                os.remove(f)
    return len(gone)


_INT = struct.Struct("i")
_TWO_DOUBLES = struct.Struct("dd")


def _entries(path: str) -> Iterator[tuple[bytes, float]]:
    """Every (key, value) of one file, in prometheus_client's layout (``mmap_dict.py``)."""
    with open(path, "rb") as f:
        data = f.read()
    used = _INT.unpack_from(data, 0)[0] if len(data) >= 8 else 0
    pos = 8
    while pos < used:
        n = _INT.unpack_from(data, pos)[0]
        if n <= 0 or pos + 4 + n > used:
            raise RuntimeError(f"poolwatch: {path} is corrupted")
        key = data[pos + 4 : pos + 4 + n]
        pos += 4 + n + (8 - (n + 4) % 8)
        yield key, _TWO_DOUBLES.unpack_from(data, pos)[0]
        pos += 16


def _merge_into_archive(path: str, typ: str, files: list[str]) -> None:
    """Add ``files`` into the archive of their type. A counter's, a histogram bucket's or a
    summary's value is summed across processes under the same key, and every process writes a
    series under the same key text (prometheus_client's ``mmap_key``: JSON with sorted keys), so
    the merge adds values by key without decoding them, and writes prometheus_client's layout
    (per-bucket counts, as each process's file holds them)."""
    archive = os.path.join(path, f"{typ}_{ARCHIVE_ID}.db")
    totals: dict[bytes, float] = {}
    for f in [archive, *files]:
        try:
            for key, value in _entries(f):
                totals[key] = totals.get(key, 0.0) + value
        except FileNotFoundError:
            continue
    out = bytearray(8)
    for key, value in totals.items():
        padded = key + b" " * (8 - (len(key) + 4) % 8)
        out += _INT.pack(len(key)) + padded + _TWO_DOUBLES.pack(value, 0.0)
    _INT.pack_into(out, 0, len(out))
    tmp = archive + ".tmp"  # not *.db: a scrape never reads it half written
    with open(tmp, "wb") as fh:
        fh.write(out)
    os.replace(tmp, archive)
