"""FastAPI with an async engine, instrumented by poolwatch, and its /metrics route.

    DATABASE_URL=postgresql+psycopg://app@db/orders uvicorn app:app

``instrument()`` takes the ``AsyncEngine`` as it is (the pool it watches is the sync engine's
underneath). ``make_asgi_app()`` serves prometheus_client's default registry with poolwatch's
exposition (the text format, or OpenMetrics with exemplars when Prometheus asks for it).
Starlette mounts it at ``/metrics/`` and redirects ``/metrics`` there; Prometheus follows the
redirect (or set ``metrics_path: /metrics/``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import poolwatch
from poolwatch.exposition import make_asgi_app

engine = create_async_engine(
    os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/postgres"),
    pool_size=5,
    max_overflow=5,
    pool_timeout=10,
)
poolwatch.instrument(engine, name="orders")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)
app.mount("/metrics", make_asgi_app())


@app.get("/connections")
async def server_connections() -> dict[str, int]:
    async with engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM pg_stat_activity"))).scalar_one()
    return {"connections": count}
