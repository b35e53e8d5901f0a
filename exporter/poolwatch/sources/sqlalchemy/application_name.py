"""``application_name=``: name PostgreSQL connections after their pool, so that server-side
views (``pg_stat_activity``, postgres_exporter's ``pg_stat_activity_count{application_name}``)
line up with poolwatch's pools.

The dialect's ``connect`` is wrapped on this engine's dialect instance (a ``do_connect`` event
listener would send every statement of the engine through SQLAlchemy's dialect-event checks). A
name the application set anywhere wins: ``connect_args``, the URL's query, a ``dsn`` that names
one, or libpq's ``PGAPPNAME``.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["set_application_name", "unset_application_name"]


def _already_named(cparams: dict[str, Any]) -> bool:
    if "application_name" in cparams or os.environ.get("PGAPPNAME"):
        return True
    dsn = cparams.get("dsn") or cparams.get("conninfo")
    if isinstance(dsn, str) and "application_name" in dsn:
        return True
    server_settings = cparams.get("server_settings")  # asyncpg
    return isinstance(server_settings, dict) and "application_name" in server_settings


def set_application_name(dialect: Any, name: str) -> bool:
    """Wrap ``dialect.connect``; returns whether it was wrapped."""
    connect = dialect.connect
    asyncpg = getattr(dialect, "driver", "") == "asyncpg"

    def poolwatch_connect(*cargs: Any, **cparams: Any) -> Any:
        if not _already_named(cparams):
            if asyncpg:
                cparams["server_settings"] = {
                    **(cparams.get("server_settings") or {}),
                    "application_name": name,
                }
            else:
                cparams["application_name"] = name
        return connect(*cargs, **cparams)

    poolwatch_connect._poolwatch = True  # type: ignore[attr-defined]
    dialect.connect = poolwatch_connect
    return True


def unset_application_name(dialect: Any) -> None:
    if getattr(dialect.__dict__.get("connect"), "_poolwatch", False):
        del dialect.connect
