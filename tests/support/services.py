"""Real services for the tests: PostgreSQL and Prometheus, found or started on loopback.

In CI (``CI=true``) a missing service is a failure, never a skip: a green run must mean the
tests really talked to a database and to Prometheus.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("POOLWATCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(what: str) -> None:
    """Skip locally, fail in CI."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI and is not available", pytrace=False)
    pytest.skip(f"{what} not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class ThrowawayCluster:
    """A PostgreSQL cluster of our own, for tests that stop, restart or kill the server."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        """``settings``: postgresql.conf lines of the test's own (``max_connections`` ...)."""
        self.dir = Path(tempfile.mkdtemp(prefix="poolwatch-pg-"))
        self.port = free_port()
        self.data = self.dir / "data"
        self._run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        )
        conf = self.data / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\nfsync = off\n"
                "max_connections = 50\nshared_buffers = 16MB\n"
            )
            for key, value in (settings or {}).items():
                f.write(f"{key} = {value}\n")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, cmd: list[str]) -> None:
        # initdb and postgres refuse to run as root; tests here run as root.
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            for p in self.dir.rglob("*"):
                shutil.chown(p, "postgres", "postgres")
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def pg_url() -> str | None:
    """The shared PostgreSQL the README's test command brought up (or the machine's own)."""
    url = os.environ.get("POOLWATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, connect_timeout=3):
            return url
    except Exception:
        return None


def prometheus_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} (Debian package 'prometheus')")
    assert path is not None
    return path


class PrometheusServer:
    """A real Prometheus on a free loopback port, with a config written by the test."""

    def __init__(self, config_yaml: str, extra_files: dict[str, str] | None = None) -> None:
        binary = prometheus_binary("prometheus")  # first: it skips (or fails) if there is none
        self.dir = Path(tempfile.mkdtemp(prefix="poolwatch-prom-"))
        (self.dir / "prometheus.yml").write_text(config_yaml)
        for rel, text in (extra_files or {}).items():
            target = self.dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self.port = free_port()
        self.log = (self.dir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        wait_for_port(self.port)
        self.wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            time.sleep(0.1)
        raise TimeoutError("Prometheus did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def prometheus(
    config_yaml: str, extra_files: dict[str, str] | None = None
) -> Iterator[PrometheusServer]:
    server = PrometheusServer(config_yaml, extra_files)
    try:
        yield server
    finally:
        server.stop()
