"""``create_engine("postgresql://...?plugin=poolwatch")``: a thin adapter over ``instrument()``.

Settings ride along in the URL as ``poolwatch_<setting>=value`` (for example
``?plugin=poolwatch&poolwatch_name=orders&poolwatch_leak_threshold=30``) or in
``create_engine(..., poolwatch_name="orders")``; both are removed before the dialect sees them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL, CreateEnginePlugin, Engine

__all__ = ["PoolwatchPlugin"]

_PREFIX = "poolwatch_"


class PoolwatchPlugin(CreateEnginePlugin):
    def __init__(self, url: URL, kwargs: dict[str, Any]) -> None:
        super().__init__(url, kwargs)
        from poolwatch.core.config import resolve_settings

        self._url_keys = [k for k in url.query if k.startswith(_PREFIX)]
        overrides: dict[str, Any] = {}
        for key in self._url_keys:
            value = url.query[key]
            overrides[key[len(_PREFIX) :]] = value[-1] if isinstance(value, tuple) else value
        for key in [k for k in kwargs if k.startswith(_PREFIX)]:
            overrides[key[len(_PREFIX) :]] = kwargs.pop(key)
        # Fail inside create_engine(), at startup, on a bad setting.
        resolve_settings(overrides)
        self._overrides = overrides

    def update_url(self, url: URL) -> URL:
        return url.difference_update_query(self._url_keys)

    def engine_created(self, engine: Engine) -> None:
        from poolwatch.api import instrument_engine

        instrument_engine(engine, dict(self._overrides))
