"""psycopg_pool pools (``ConnectionPool``, ``AsyncConnectionPool`` and the two null pools)."""

from __future__ import annotations

from poolwatch.sources.psycopg_pool.source import (
    accepts,
)
from poolwatch.sources.psycopg_pool.source import (
    instrument_pool as instrument,
)
from poolwatch.sources.psycopg_pool.source import (
    instrumented_pool as instrumented,
)
from poolwatch.sources.psycopg_pool.source import (
    uninstrument_pool as uninstrument,
)

__all__ = ["accepts", "instrument", "instrumented", "uninstrument"]
