"""A WSGI app whose engine is instrumented in each worker (works with and without --preload)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import create_engine, text

import poolwatch

engine = create_engine(
    os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/postgres"),
    pool_size=5,
    max_overflow=0,
)
poolwatch.instrument(engine, name=os.environ.get("POOL_NAME", "orders"))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    with engine.connect() as conn:
        value = conn.execute(text("SELECT 1")).scalar_one()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{value}\n".encode()]
