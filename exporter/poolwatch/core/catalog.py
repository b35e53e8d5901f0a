"""Every metric poolwatch exports, defined once.

The Prometheus backend, the OpenTelemetry backend, the multiprocess backend and README's metrics
reference (a test keeps the table equal to :func:`reference_table`) all read this list. A metric's
Prometheus name follows from its OpenTelemetry name the way the OpenTelemetry-to-Prometheus
compatibility spec translates it (a test checks that too), so one dashboard serves both paths.

Gauges are not pushed by the hot path: each is read from the pool's state when a backend collects,
by the metric's ``observe`` function, which returns ``(label values, value)`` pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from poolwatch.core.state import PoolLimits

if TYPE_CHECKING:
    from poolwatch.core.state import PoolSnapshot, PoolState

__all__ = [
    "CATALOG",
    "POOL_LABEL",
    "Metric",
    "by_key",
    "prometheus_name",
    "reference_table",
]

POOL_LABEL = "db_client_connection_pool_name"
"""On every series; the user's constant labels follow it, then the metric's own."""

Kind = Literal["gauge", "counter", "histogram"]
Buckets = Literal["pool", "operation"]
Aggregation = Literal["sum", "max"]
OTelInstrument = Literal[
    "histogram", "counter", "observable_up_down_counter", "observable_gauge", "observable_counter"
]
Observe = Callable[["PoolState", "PoolSnapshot"], Iterable[tuple[tuple[str, ...], float]]]


@dataclass(frozen=True)
class Metric:
    key: str
    """What backends call it (``wait_time``); stable, internal."""
    otel: str
    """The OpenTelemetry instrument name (``db.client.connection.wait_time``)."""
    kind: Kind
    unit: str
    """The OpenTelemetry unit: ``s`` gives ``_seconds``; ``{...}`` annotations give nothing."""
    help: str
    """HELP text and OpenTelemetry description."""
    reference: str
    """The meaning, for README's metrics reference (Markdown)."""
    labels: tuple[str, ...] = ()
    """Label names beyond the pool name and the user's labels."""
    labels_doc: str = ""
    """The extra labels as README shows them (Markdown)."""
    otel_instrument: OTelInstrument = "counter"
    buckets: Buckets | None = None
    observe: Observe | None = None
    """Gauges (and counters kept in the pool's state): read at collection time."""
    aggregation: Aggregation = "sum"
    """Across the worker processes of one service: gauges of live workers summed, or their
    maximum; counters and histograms are always summed over every worker that ever ran."""
    info: bool = False
    """An info series: value 1, the information in its labels."""

    @property
    def prometheus(self) -> str:
        """The name as exposed, without the ``_total``/``_bucket`` sample suffixes."""
        return prometheus_name(self.otel, self.unit)


def prometheus_name(otel: str, unit: str) -> str:
    """The OpenTelemetry-to-Prometheus translation: dots to ``_``, unit ``s`` to ``_seconds``."""
    name = otel.replace(".", "_")
    if unit == "s" and not name.endswith("_seconds"):
        name += "_seconds"
    return name


def _state_counts(state: PoolState, snap: PoolSnapshot) -> list[tuple[tuple[str, ...], float]]:
    # One snapshot for both states, so used + idle is the pool's open connections.
    return [(("used",), snap.used), (("idle",), snap.idle)]


def _limit(field: str) -> Observe:
    def observe(state: PoolState, snap: PoolSnapshot) -> list[tuple[tuple[str, ...], float]]:
        value = getattr(snap.limits, field)
        return [] if value is None else [((), value)]  # absent when unbounded

    return observe


def _value(field: str) -> Observe:
    def observe(state: PoolState, snap: PoolSnapshot) -> list[tuple[tuple[str, ...], float]]:
        return [((), getattr(snap, field))]

    return observe


def _info(state: PoolState, snap: PoolSnapshot) -> list[tuple[tuple[str, ...], float]]:
    return [(tuple(snap.limits.info().values()), 1)]


def _server_max(state: PoolState, snap: PoolSnapshot) -> list[tuple[tuple[str, ...], float]]:
    limits = state.server_limits
    return [] if limits is None else [((), limits.allowed)]


def _server_settings(
    state: PoolState, snap: PoolSnapshot
) -> list[tuple[tuple[str, ...], float]]:
    limits = state.server_limits
    if limits is None:
        return []
    return [((name, str(value)), 1) for name, value in sorted(limits.settings.items())]


def _errors(state: PoolState, snap: PoolSnapshot) -> list[tuple[tuple[str, ...], float]]:
    return [((component,), n) for component, n in list(state.errors.counts.items())]


CATALOG: tuple[Metric, ...] = (
    Metric(
        "count", "db.client.connection.count", "gauge", "{connection}",
        "Connections open now, by state (used = checked out, idle = open in the pool).",
        "connections open now: checked out, and open in the pool",
        labels=("db_client_connection_state",),
        labels_doc="`db_client_connection_state` = `used` / `idle`",
        otel_instrument="observable_up_down_counter", observe=_state_counts,
    ),
    Metric(
        "max", "db.client.connection.max", "gauge", "{connection}",
        "Most connections the pool may open (QueuePool: pool_size + max_overflow).",
        "most connections the pool may open (QueuePool: `pool_size + max_overflow`; StaticPool: "
        "1; psycopg_pool: `max_size`); absent when unbounded (NullPool, SingletonThreadPool, a "
        "psycopg_pool null pool with `max_size=0`)",
        otel_instrument="observable_up_down_counter", observe=_limit("max"),
    ),
    Metric(
        "idle_max", "db.client.connection.idle.max", "gauge", "{connection}",
        "Most idle connections the pool keeps (QueuePool: pool_size).",
        "most idle connections kept (QueuePool: `pool_size`; NullPool and psycopg_pool's null "
        "pools: 0; psycopg_pool: `max_size`, until `max_idle` shrinks it back to `min_size`)",
        otel_instrument="observable_up_down_counter", observe=_limit("idle_max"),
    ),
    Metric(
        "idle_min", "db.client.connection.idle.min", "gauge", "{connection}",
        "Fewest idle connections the pool keeps (psycopg_pool: min_size).",
        "fewest idle connections kept, where the pool has that setting (psycopg_pool "
        "`min_size`); absent for SQLAlchemy pools",
        otel_instrument="observable_up_down_counter", observe=_limit("idle_min"),
    ),
    Metric(
        "pending_requests", "db.client.connection.pending_requests", "gauge", "{request}",
        "Callers waiting for a connection right now.",
        "callers waiting for a connection right now",
        otel_instrument="observable_up_down_counter", observe=_value("pending"),
    ),
    Metric(
        "timeouts", "db.client.connection.timeouts", "counter", "{timeout}",
        "Checkouts that gave up waiting for a connection (the pool raised its timeout error).",
        "checkouts that gave up waiting (the pool raised `sqlalchemy.exc.TimeoutError`, "
        "psycopg_pool `PoolTimeout`)",
    ),
    Metric(
        "wait_time", "db.client.connection.wait_time", "histogram", "s",
        "Time from asking the pool for a connection to getting one (or timing out).",
        "time from asking the pool for a connection to getting one or timing out (includes "
        "pre-ping and opening a new connection); its `_count` is the number of checkouts that "
        "got a connection or timed out (a checkout that failed with another error is counted in "
        "`poolwatch_connection_errors_total` instead). A timed-out wait is recorded as the "
        "pool's `timeout`, and the timeout is a bucket bound of that pool's series (added to "
        "`pool_buckets` when it falls between two), so quantiles never read above it; on the "
        "OpenTelemetry path bucket advice is per instrument, so there it is the first pool's",
        otel_instrument="histogram", buckets="pool",
    ),
    Metric(
        "use_time", "db.client.connection.use_time", "histogram", "s",
        "Time a connection was held, from checkout to checkin.",
        "time a connection was held, checkout to checkin (or detach)",
        otel_instrument="histogram", buckets="pool",
    ),
    Metric(
        "create_time", "db.client.connection.create_time", "histogram", "s",
        "Time to open a new DBAPI connection (including the dialect's on-connect set-up).",
        "time to open a new DBAPI connection, including the dialect's on-connect set-up; its "
        "`_count` is connections opened",
        otel_instrument="histogram", buckets="pool",
    ),
    Metric(
        "operation_duration", "db.client.operation.duration", "histogram", "s",
        "Duration of statement executions.",
        "duration of each statement execution (the DBAPI `execute`/`executemany`)",
        labels=("db_system_name", "db_operation_name", "db_query_summary", "error_type"),
        labels_doc="`db_system_name`, `db_operation_name`, `db_query_summary`, `error_type` "
        "(failures only)",
        otel_instrument="histogram", buckets="operation",
    ),
    Metric(
        "invalidations", "poolwatch.connection.invalidations", "counter", "{invalidation}",
        "Connections invalidated, by kind (hard, soft, pre_ping) and reason (exception type).",
        "connections invalidated; `reason` is the error type (SQLSTATE class or exception "
        "class, at most 20 per pool) or `none`; psycopg_pool: `kind=\"hard\"`, `reason` = "
        "`connection_lost` (found broken by `check`) or `bad_return` (returned closed)",
        labels=("kind", "reason"),
        labels_doc="`kind` = `hard` / `soft` / `pre_ping`, `reason`",
    ),
    Metric(
        "connection_errors", "poolwatch.connection.errors", "counter", "{error}",
        "Checkouts that failed with an error other than a timeout, usually because the "
        "database refused or dropped new connections.",
        "checkouts that failed with an error other than a timeout, usually because the "
        "database refused or dropped new connections; psycopg_pool: every failed connect of "
        "the pool (its workers retry them), and `too_many_requests` for a `max_waiting` "
        "refusal",
        labels=("error_type",), labels_doc="`error_type` (see below)",
    ),
    Metric(
        "leaked", "poolwatch.connections.leaked", "gauge", "{connection}",
        "Connections checked out for longer than the leak threshold right now.",
        "connections checked out longer than `leak_threshold` right now",
        otel_instrument="observable_up_down_counter", observe=_value("leaked"),
    ),
    Metric(
        "leaks", "poolwatch.connection.leaks", "counter", "{leak}",
        "Connections seen held longer than the leak threshold.",
        "connections seen held past `leak_threshold`",
    ),
    Metric(
        "wait_longest", "poolwatch.connection.wait_longest", "gauge", "s",
        "How long the caller that has waited longest so far has been waiting (0 if none).",
        "how long the longest-waiting caller has waited so far (0 when nobody waits)",
        otel_instrument="observable_gauge", observe=_value("longest_wait"), aggregation="max",
    ),
    Metric(
        "pool_info", "poolwatch.pool.info", "gauge", "",
        "The pool's configuration (value is always 1).",
        "the pool's configuration, and the server as the pool addresses it (`server_address`, "
        "`server_port`, `db_namespace`: the join key of the fleet rules); one label set for "
        "every pool kind (SQLAlchemy's `pool_size`, `max_overflow`, `recycle`, `pre_ping`; "
        "psycopg_pool's `min_size`, `max_size`, `max_waiting`, `max_lifetime`, `max_idle`), "
        "empty, so absent in Prometheus, where the pool has no such setting",
        labels=PoolLimits.INFO_LABELS,
        labels_doc=", ".join(f"`{label}`" for label in PoolLimits.INFO_LABELS),
        otel_instrument="observable_gauge", observe=_info, aggregation="max", info=True,
    ),
    Metric(
        "server_connections_max", "poolwatch.server.connections.max", "gauge", "{connection}",
        "Connections the database server allows this pool's role (the smallest limit that "
        "applies), as last read by the pool.",
        "connections the server allows this pool's role: PostgreSQL `max_connections` − "
        "`superuser_reserved_connections` − `reserved_connections`, or the role's or database's "
        "`CONNECTION LIMIT` if smaller; MySQL/MariaDB `max_connections` (or "
        "`max_user_connections`); read on a new connection at most every 5 minutes; absent "
        "where unknown (another database, a failed read, `server_limits=false`)",
        otel_instrument="observable_up_down_counter", observe=_server_max, aggregation="max",
    ),
    Metric(
        "server_connections_limit_info", "poolwatch.server.connections.limit_info", "gauge", "",
        "The server's connection settings behind poolwatch_server_connections_max (value is "
        "always 1).",
        "each setting behind `poolwatch_server_connections_max` and its value, where it applies "
        "(`max_connections`, `superuser_reserved_connections`, `reserved_connections`, "
        "`role_connection_limit`, `database_connection_limit`, `max_user_connections`)",
        labels=("setting", "value"), labels_doc="`setting`, `value`",
        otel_instrument="observable_gauge", observe=_server_settings, aggregation="max",
        info=True,
    ),
    Metric(
        "summaries_folded", "poolwatch.query_summaries.folded", "counter", "{statement}",
        'Statement executions counted under db_query_summary="other" because the '
        "max_query_summaries cap was reached (each execution, failed ones included).",
        'statement executions counted under `db_query_summary="other"` because '
        "`max_query_summaries` was reached: every execution (failed ones too) of a statement "
        "whose summary did not get its own series; statements whose summary is `other` anyway "
        "are not counted",
    ),
    Metric(
        "instrumentation_errors", "poolwatch.instrumentation.errors", "counter", "{error}",
        "Errors inside poolwatch itself, by component; the application was not affected.",
        "errors inside poolwatch (the application was not affected); every component is "
        "exported from 0",
        labels=("component",), labels_doc="`component`",
        otel_instrument="observable_counter", observe=_errors,
    ),
)  # fmt: skip

_BY_KEY = {m.key: m for m in CATALOG}


def by_key(key: str) -> Metric:
    return _BY_KEY[key]


def reference_table() -> str:
    """README's metrics reference table, as Markdown."""
    rows = ["| series | type | extra labels | meaning |", "|---|---|---|---|"]
    for m in CATALOG:
        suffix = "_total" if m.kind == "counter" else ""
        kind = "gauge (always 1)" if m.info else m.kind
        labels = f" {m.labels_doc} " if m.labels_doc else " "
        rows.append(f"| `{m.prometheus}{suffix}` | {kind} |{labels}| {m.reference} |")
    return "\n".join(rows) + "\n"
