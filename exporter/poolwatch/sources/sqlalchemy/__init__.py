"""SQLAlchemy engines (``Engine`` and ``AsyncEngine``, every pool class)."""

from __future__ import annotations

from poolwatch.sources.sqlalchemy.source import (
    accepts,
)
from poolwatch.sources.sqlalchemy.source import (
    instrument_engine as instrument,
)
from poolwatch.sources.sqlalchemy.source import (
    instrumented_engine as instrumented,
)
from poolwatch.sources.sqlalchemy.source import (
    uninstrument_engine as uninstrument,
)

__all__ = ["accepts", "instrument", "instrumented", "uninstrument"]
