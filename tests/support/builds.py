"""The two builds of poolwatch's hot path, for tests that must run under each."""

from __future__ import annotations

from types import ModuleType

import pytest

from poolwatch.core import build as wrappers
from poolwatch.core import hotpath
from tests.support.services import unavailable

BUILDS = ("compiled", "interpreted")
_WRAPPERS = ("Switch", "Series", "Flag", "Waiting", "checkout_wrapper", "checkin_wrapper", "execute_wrapper",
             "async_checkout_wrapper", "async_checkin_wrapper", "cursor_execute_wrapper",
             "async_cursor_execute_wrapper")


def compiled_build() -> ModuleType:
    """``poolwatch.core._hotpath``; a missing or stale build is a failure in CI, a skip elsewhere."""
    module = wrappers.compiled_build()
    if module is None:
        unavailable("the compiled hot path (poolwatch.core._hotpath, built by setup.py)")
    assert module is not None
    return module


def use_build(monkeypatch: pytest.MonkeyPatch, build: str) -> None:
    """Make instrumentations and histograms created from now on use ``build``, whatever the
    process chose at import."""
    module = hotpath if build == "interpreted" else compiled_build()
    for name in _WRAPPERS:
        monkeypatch.setattr(wrappers, name, getattr(module, name))
    # Interpreted, the histograms defer to a deque (wrappers.Buckets is None).
    monkeypatch.setattr(wrappers, "Buckets", None if build == "interpreted" else module.Buckets)
