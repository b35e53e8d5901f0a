"""An ASGI app for ``uvicorn --workers``: an async engine per worker (uvicorn spawns them), its own
``/metrics`` from the multiprocess files, as an app in multiprocess mode serves it."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import poolwatch
from poolwatch.exposition import service_registry

PROBE = "SELECT 1 FROM pg_database LIMIT 1"

engine = create_async_engine(
    os.environ["POOLWATCH_TEST_PG"],
    pool_size=5,
    max_overflow=0,
    connect_args={"application_name": f"{os.environ['PW_APP']}-{os.getpid()}"},
)
poolwatch.instrument(engine, name=os.environ["PW_POOL_NAME"])
registry = service_registry()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    status, body = 200, str(os.getpid()).encode()
    if path == "/hold":
        key = int(parse_qs(scope["query_string"].decode())["key"][0])
        async with engine.connect() as c:
            await c.execute(text(f"SELECT pg_advisory_lock_shared({key})"))
            await c.execute(text(f"SELECT pg_advisory_unlock_shared({key})"))
    elif path == "/query":
        async with engine.connect() as c:
            await c.execute(text(PROBE))
    elif path == "/metrics":
        body = generate_latest(registry)
    else:
        status, body = 404, b"not found"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
