"""Which build of :mod:`poolwatch.core.hotpath` the listeners install: compiled when it can be.

``poolwatch.core._hotpath`` is ``hotpath.py`` compiled by Cython at install time (``setup.py``). It
is used when it was built from the ``hotpath.py`` installed beside it (a build left over from an
older source would run old code), on an interpreter with the GIL (the wrappers rely on it as the
interpreted ones do; a free-threaded build would re-enable it for a module that does not declare
otherwise), and unless ``POOLWATCH_PURE_PYTHON`` is true in the environment when poolwatch is
imported (the escape hatch, should the compiled build ever be suspected). Otherwise the
interpreted module runs: the same code, slower.

The choice covers poolwatch's histograms too (:data:`Buckets`).

Tracebacks through the compiled wrappers name ``poolwatch/core/hotpath.py`` (``setup.py`` compiles
it so), a path ``linecache`` resolves on ``sys.path`` to the source installed beside the build;
the build's ``__loader__`` hands that source to ``linecache``, so the traceback shows its lines.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from poolwatch.core import hotpath as interpreted
from poolwatch.core.errors import logger
from poolwatch.core.setting_values import parse_bool

__all__ = [
    "COMPILED", "SEEN", "Buckets", "Flag", "Series", "Switch", "Waiting",
    "async_checkin_wrapper", "async_checkout_wrapper", "async_cursor_execute_wrapper",
    "checkin_wrapper", "checkout_wrapper", "compiled_build", "cursor_execute_wrapper",
    "execute_wrapper", "pure_python_requested",
]  # fmt: skip


def pure_python_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """``POOLWATCH_PURE_PYTHON``: a boolean; unset or empty means false. Read at import, where
    raising would crash an application that never called ``instrument()``: a bad value is logged
    and the default kept."""
    raw = environ.get("POOLWATCH_PURE_PYTHON", "")
    if raw.strip() == "":
        return False
    try:
        return parse_bool("pure_python", raw, "POOLWATCH_PURE_PYTHON")
    except ValueError as e:
        logger.warning("%s; using the compiled hot path where it is installed", e)
        return False


def compiled_build() -> ModuleType | None:
    """``poolwatch.core._hotpath`` if it is installed and was built from the ``hotpath.py`` beside
    it; None otherwise (a build from another source is logged)."""
    try:
        module = importlib.import_module("poolwatch.core._hotpath")
    except ImportError:
        return None
    try:
        source = Path(interpreted.__file__).read_bytes()
    except OSError:  # no source beside it (a zipapp, a frozen build): trust the build
        return module
    if getattr(module, "SOURCE_SHA256", None) != hashlib.sha256(source).hexdigest():
        logger.warning(
            "poolwatch: %s was compiled from another version of %s; running the interpreted"
            " module (reinstall poolwatch to rebuild it)",
            module.__file__,
            interpreted.__file__,
        )
        return None
    if not isinstance(module.__loader__, _SourceOf):
        module.__loader__ = _SourceOf(Path(interpreted.__file__), module.__loader__)
    return module


class _SourceOf:
    """The compiled build's loader as ``linecache`` sees it: its source is ``hotpath.py``.

    ``linecache`` asks a module's ``__loader__`` for the source before it searches ``sys.path``,
    and an extension module's own loader answers None, which stops the search (no source line
    in the traceback)."""

    def __init__(self, path: Path, loader: Any) -> None:
        self.path = path
        self.loader = loader

    def get_source(self, name: str) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except OSError:
            return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)  # the rest is the extension module loader's


def _choose() -> ModuleType:
    if pure_python_requested():
        return interpreted
    gil_enabled = getattr(sys, "_is_gil_enabled", None)
    if gil_enabled is not None and not gil_enabled():
        return interpreted
    return compiled_build() or interpreted


_module = _choose()
COMPILED: bool = _module is not interpreted
# Typed as the interpreted module's names; the compiled ones are the same source.
SEEN = interpreted.SEEN
Switch: type[interpreted.Switch] = interpreted.Switch
Flag: type[interpreted.Flag] = interpreted.Flag
Waiting: type[interpreted.Waiting] = interpreted.Waiting
Series: type[interpreted.Series] = interpreted.Series
checkout_wrapper = interpreted.checkout_wrapper
checkin_wrapper = interpreted.checkin_wrapper
execute_wrapper = interpreted.execute_wrapper
async_checkout_wrapper = interpreted.async_checkout_wrapper
async_checkin_wrapper = interpreted.async_checkin_wrapper
cursor_execute_wrapper = interpreted.cursor_execute_wrapper
async_cursor_execute_wrapper = interpreted.async_cursor_execute_wrapper
Buckets: type[interpreted.Buckets] | None = None
"""The compiled bucket counter poolwatch's histograms record into, or None: interpreted, they
defer values to a ``deque`` instead (see :mod:`poolwatch.backends.prometheus.histogram`)."""
if COMPILED:
    Buckets = _module.Buckets
    Switch = _module.Switch
    Flag = _module.Flag
    Waiting = _module.Waiting
    Series = _module.Series
    checkout_wrapper = _module.checkout_wrapper
    checkin_wrapper = _module.checkin_wrapper
    execute_wrapper = _module.execute_wrapper
    async_checkout_wrapper = _module.async_checkout_wrapper
    async_checkin_wrapper = _module.async_checkin_wrapper
    cursor_execute_wrapper = _module.cursor_execute_wrapper
    async_cursor_execute_wrapper = _module.async_cursor_execute_wrapper
