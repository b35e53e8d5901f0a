"""The metric and label names top and doctor read, spelled once: the public contract (README's
"Metrics reference"). tools/ reads from outside and so does not import poolwatch.core.catalog;
tests/test_tools.py keeps these equal to it."""

from __future__ import annotations

from typing import Final

__all__ = [
    "CONNECTION_ERRORS",
    "CONNECTION_LEAKED",
    "CONNECTION_LEAKS",
    "CONNECTION_TIMEOUTS",
    "COUNT",
    "CREATE_TIME",
    "ERROR_TOO_MANY_CONNECTIONS",
    "ERROR_TYPE",
    "IDLE",
    "INSTANCE",
    "JOB",
    "LE",
    "MAX",
    "OPERATION_DURATION",
    "PENDING",
    "POOL",
    "POOL_INFO",
    "QUERY_SUMMARY",
    "SERVER_ADDRESS",
    "SERVER_CONNECTIONS_MAX",
    "SERVER_PORT",
    "STATE",
    "USED",
    "USE_TIME",
    "WAIT_LONGEST",
    "WAIT_TIME",
]

# Labels.
POOL: Final = "db_client_connection_pool_name"
STATE: Final = "db_client_connection_state"
USED: Final = "used"
IDLE: Final = "idle"
QUERY_SUMMARY: Final = "db_query_summary"
ERROR_TYPE: Final = "error_type"
LE: Final = "le"
JOB: Final = "job"  # added by Prometheus
INSTANCE: Final = "instance"  # added by Prometheus (top sets it to the URL's host:port)
SERVER_ADDRESS: Final = "server_address"  # on POOL_INFO (issue #16)
SERVER_PORT: Final = "server_port"

# Gauges.
COUNT: Final = "db_client_connection_count"
MAX: Final = "db_client_connection_max"
PENDING: Final = "db_client_connection_pending_requests"
WAIT_LONGEST: Final = "poolwatch_connection_wait_longest_seconds"
CONNECTION_LEAKED: Final = "poolwatch_connections_leaked"
POOL_INFO: Final = "poolwatch_pool_info"
SERVER_CONNECTIONS_MAX: Final = "poolwatch_server_connections_max"

# Counters (sample names, with their suffix).
CONNECTION_TIMEOUTS: Final = "db_client_connection_timeouts_total"
CONNECTION_LEAKS: Final = "poolwatch_connection_leaks_total"
CONNECTION_ERRORS: Final = "poolwatch_connection_errors_total"
ERROR_TOO_MANY_CONNECTIONS: Final = "too_many_connections"

# Histograms (base names; samples add _bucket, _sum, _count).
WAIT_TIME: Final = "db_client_connection_wait_time_seconds"
USE_TIME: Final = "db_client_connection_use_time_seconds"
CREATE_TIME: Final = "db_client_connection_create_time_seconds"
OPERATION_DURATION: Final = "db_client_operation_duration_seconds"
