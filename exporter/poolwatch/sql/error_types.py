"""The ``error_type`` label of a failed statement or connection attempt.

With a SQLSTATE from the driver (psycopg 3 ``sqlstate``, psycopg2 ``pgcode``, asyncpg
``sqlstate``, pg8000's ``C`` field; SQLAlchemy wrappers are looked through via ``orig``),
the label is the SQLSTATE class name from PostgreSQL's Appendix A, e.g. ``23`` →
``integrity_constraint_violation``; an unknown class is ``sqlstate_<CC>``. Without one it
is the exception class name (``OperationalError``, ``TimeoutError``), restricted to
``[A-Za-z0-9_.]`` and 64 characters. The message is never used: it carries values.

A failed connection attempt (:func:`classify_connection_error`, the ``error_type`` of
``poolwatch_connection_errors_total`` and of a failed checkout's wait span) first gets one of
:data:`CONNECTION_ERROR_TYPES`, which mean the same for every driver, so "the server is full" reads
differently from "the server is down". They come from the SQLSTATE, a MySQL error number, the
exception class (``ConnectionRefusedError``, ``ssl.SSLError``, ``socket.gaierror``...) and, where
the driver gives nothing else (libpq hands psycopg only the text of a refusal), from matching the
message against the server's and client library's fixed phrases. The message is read, never
copied: the label is always one of the fixed values, a SQLSTATE class or a class name.
"""

from __future__ import annotations

import re

__all__ = [
    "CONNECTION_ERROR_TYPES",
    "OTHER_ERROR",
    "SQLSTATE_CLASSES",
    "classify_connection_error",
    "classify_error",
]

OTHER_ERROR = "_OTHER"  # the semantic conventions' fallback value for error.type

# PostgreSQL Appendix A, "PostgreSQL Error Codes": class code → class title, snake_cased.
SQLSTATE_CLASSES: dict[str, str] = {
    "00": "successful_completion",
    "01": "warning",
    "02": "no_data",
    "03": "sql_statement_not_yet_complete",
    "08": "connection_exception",
    "09": "triggered_action_exception",
    "0A": "feature_not_supported",
    "0B": "invalid_transaction_initiation",
    "0F": "locator_exception",
    "0L": "invalid_grantor",
    "0P": "invalid_role_specification",
    "0Z": "diagnostics_exception",
    "20": "case_not_found",
    "21": "cardinality_violation",
    "22": "data_exception",
    "23": "integrity_constraint_violation",
    "24": "invalid_cursor_state",
    "25": "invalid_transaction_state",
    "26": "invalid_sql_statement_name",
    "27": "triggered_data_change_violation",
    "28": "invalid_authorization_specification",
    "2B": "dependent_privilege_descriptors_still_exist",
    "2D": "invalid_transaction_termination",
    "2F": "sql_routine_exception",
    "34": "invalid_cursor_name",
    "38": "external_routine_exception",
    "39": "external_routine_invocation_exception",
    "3B": "savepoint_exception",
    "3D": "invalid_catalog_name",
    "3F": "invalid_schema_name",
    "40": "transaction_rollback",
    "42": "syntax_error_or_access_rule_violation",
    "44": "with_check_option_violation",
    "53": "insufficient_resources",
    "54": "program_limit_exceeded",
    "55": "object_not_in_prerequisite_state",
    "57": "operator_intervention",
    "58": "system_error",
    "72": "snapshot_failure",
    "F0": "config_file_error",
    "HV": "fdw_error",
    "P0": "plpgsql_error",
    "XX": "internal_error",
}

_SQLSTATE = re.compile(r"[0-9A-Z]{5}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.]+")
_MAX_NAME = 64
_MAX_DEPTH = 4  # wrappers of wrappers; bounded in case of a cycle


# The fixed vocabulary of connection failures (README, "Metrics reference").
TOO_MANY_CONNECTIONS = "too_many_connections"
CONNECTION_REFUSED = "connection_refused"
AUTHENTICATION_FAILED = "authentication_failed"
DATABASE_NOT_FOUND = "database_not_found"
SERVER_SHUTDOWN = "server_shutdown"
CONNECTION_LOST = "connection_lost"
TIMEOUT = "timeout"
NAME_RESOLUTION = "name_resolution"
TLS_ERROR = "tls_error"
CONNECTION_ERROR_TYPES = (
    TOO_MANY_CONNECTIONS,
    CONNECTION_REFUSED,
    AUTHENTICATION_FAILED,
    DATABASE_NOT_FOUND,
    SERVER_SHUTDOWN,
    CONNECTION_LOST,
    TIMEOUT,
    NAME_RESOLUTION,
    TLS_ERROR,
)

_CONNECTION_SQLSTATES = {
    "53300": TOO_MANY_CONNECTIONS,  # too_many_connections (also per role and per database)
    "28000": AUTHENTICATION_FAILED,  # invalid_authorization_specification: no such role, hba
    "28P01": AUTHENTICATION_FAILED,  # invalid_password
    "3D000": DATABASE_NOT_FOUND,  # invalid_catalog_name
    "57P01": SERVER_SHUTDOWN,  # admin_shutdown
    "57P02": SERVER_SHUTDOWN,  # crash_shutdown
    "57P03": SERVER_SHUTDOWN,  # cannot_connect_now: starting up, shutting down, recovery
    "08001": CONNECTION_REFUSED,  # sqlclient_unable_to_establish_sqlconnection
    "08004": CONNECTION_REFUSED,  # sqlserver_rejected_establishment_of_sqlconnection
    "08003": CONNECTION_LOST,  # connection_does_not_exist
    "08006": CONNECTION_LOST,  # connection_failure
}
# MySQL/MariaDB error numbers (server 1xxx, client library 2xxx).
_MYSQL_CODES = {
    1040: TOO_MANY_CONNECTIONS,  # ER_CON_COUNT_ERROR "Too many connections"
    1203: TOO_MANY_CONNECTIONS,  # ER_TOO_MANY_USER_CONNECTIONS (max_user_connections)
    1226: TOO_MANY_CONNECTIONS,  # ER_USER_LIMIT_REACHED (max_user_connections resource)
    1044: AUTHENTICATION_FAILED,  # ER_DBACCESS_DENIED_ERROR
    1045: AUTHENTICATION_FAILED,  # ER_ACCESS_DENIED_ERROR
    1698: AUTHENTICATION_FAILED,  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR
    1049: DATABASE_NOT_FOUND,  # ER_BAD_DB_ERROR "Unknown database"
    1053: SERVER_SHUTDOWN,  # ER_SERVER_SHUTDOWN
    1077: SERVER_SHUTDOWN,  # ER_NORMAL_SHUTDOWN
    2002: CONNECTION_REFUSED,  # CR_CONNECTION_ERROR (socket)
    2003: CONNECTION_REFUSED,  # CR_CONN_HOST_ERROR; a timeout is told apart by its cause
    2005: NAME_RESOLUTION,  # CR_UNKNOWN_HOST
    2006: CONNECTION_LOST,  # CR_SERVER_GONE_ERROR
    2013: CONNECTION_LOST,  # CR_SERVER_LOST
    2026: TLS_ERROR,  # CR_SSL_CONNECTION_ERROR
}
_MYSQL_MODULES = ("pymysql", "MySQLdb", "asyncmy", "aiomysql", "mysql", "mariadb")
# Fixed phrases of PostgreSQL, libpq and the MySQL client, most specific first: with several
# hosts (localhost as ::1 and 127.0.0.1) libpq joins every attempt's failure into one message,
# and what a server said about itself outranks what the network did.
_PHRASES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (error_type, re.compile(pattern, re.IGNORECASE))
    for error_type, pattern in (
        (
            TOO_MANY_CONNECTIONS,
            r"too many clients already|remaining connection slots are reserved"
            r"|too many connections|max_user_connections",
        ),
        (
            AUTHENTICATION_FAILED,
            r"authentication failed|role \".*\" does not exist|no pg_hba\.conf entry"
            r"|access denied for user|is not permitted to log in",
        ),
        (DATABASE_NOT_FOUND, r"database \".*\" does not exist|unknown database"),
        (
            SERVER_SHUTDOWN,
            r"the database system is (?:starting up|shutting down|in recovery mode|not yet"
            r" accepting connections|not accepting connections)"
            r"|terminating connection due to administrator command|server shutdown in progress",
        ),
        (CONNECTION_LOST, r"ssl syscall error|ssl connection has been closed unexpectedly"),
        (TLS_ERROR, r"\bssl\b|\btls\b|certificate"),
        (
            NAME_RESOLUTION,
            r"could not translate host name|name or service not known|nodename nor servname"
            r"|temporary failure in name resolution|unknown (?:mysql )?server host"
            r"|no address associated with hostname",
        ),
        (TIMEOUT, r"timeout expired|timed out"),
        (CONNECTION_REFUSED, r"connection refused|no such file or directory|can't connect to"),
        (
            CONNECTION_LOST,
            r"server closed the connection unexpectedly|connection reset|broken pipe"
            r"|lost connection|server has gone away|eof detected|consuming input failed",
        ),
    )
)


def _sqlstate_of(exc: BaseException) -> str | None:
    for attr in ("sqlstate", "pgcode"):
        value = getattr(exc, attr, None)
        if isinstance(value, str) and _SQLSTATE.fullmatch(value):
            return value
    args = getattr(exc, "args", None)
    # pg8000 puts the server's error fields in a dict as the first argument.
    if isinstance(args, tuple) and args and isinstance(args[0], dict):
        value = args[0].get("C")
        if isinstance(value, str) and _SQLSTATE.fullmatch(value):
            return value
    return None


def _wrapped(exc: BaseException) -> BaseException | None:
    # SQLAlchemy's StatementError/DBAPIError keep the driver's exception in .orig.
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, BaseException) and orig is not exc else None


def _name_of(exc: BaseException) -> str:
    name = _UNSAFE.sub("_", type(exc).__qualname__).strip("_.")[:_MAX_NAME]
    return name or OTHER_ERROR


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = [exc]
    while len(chain) < _MAX_DEPTH:
        inner = _wrapped(chain[-1])
        if inner is None or inner in chain:
            break
        chain.append(inner)
    cause = exc.__cause__
    if isinstance(cause, BaseException) and cause not in chain:
        chain.append(cause)
    return chain


def classify_error(exc: BaseException) -> str:
    """Low-cardinality ``error_type`` for a statement failure. Never raises."""
    try:
        chain = _chain(exc)
        for candidate in chain:
            state = _sqlstate_of(candidate)
            if state is not None:
                return SQLSTATE_CLASSES.get(state[:2], f"sqlstate_{state[:2]}")
        # A SQLAlchemy wrapper says less than what it wraps (StatementError around a
        # TypeError from a bind processor, DBAPIError around the driver's class).
        return _name_of(chain[1] if len(chain) > 1 and _wrapped(exc) is not None else exc)
    except Exception:
        return OTHER_ERROR


def _mysql_code(exc: BaseException) -> int | None:
    if not type(exc).__module__.startswith(_MYSQL_MODULES):
        return None
    code = getattr(exc, "errno", None)  # mysql-connector
    if not isinstance(code, int):
        args = getattr(exc, "args", ())
        code = args[0] if isinstance(args, tuple) and args else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _by_class(exc: BaseException) -> str | None:
    import socket
    import ssl

    if isinstance(exc, ssl.SSLError):
        return TLS_ERROR
    if isinstance(exc, socket.gaierror):
        return NAME_RESOLUTION
    if isinstance(exc, ConnectionRefusedError):
        return CONNECTION_REFUSED
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return CONNECTION_LOST
    if isinstance(exc, TimeoutError):  # socket.timeout too; not SQLAlchemy's pool TimeoutError
        return TIMEOUT
    return None


def _message_of(exc: BaseException) -> str:
    try:
        return str(exc)[:4096]  # read here, never copied out
    except Exception:
        return ""


def classify_connection_error(exc: BaseException) -> str:
    """``error_type`` for a failed connection attempt: one of :data:`CONNECTION_ERROR_TYPES`
    when the failure is known, else what :func:`classify_error` says. Never raises."""
    try:
        chain = _chain(exc)
        for candidate in list(chain):
            context = candidate.__context__
            if isinstance(context, BaseException) and context not in chain:
                chain.append(context)  # pymysql raises its error while handling the OSError
        by_class = next((t for t in map(_by_class, chain) if t is not None), None)
        # A MySQL driver's error number first: its SQLSTATE is generic (1049 is 42000).
        for code in (c for c in map(_mysql_code, chain) if c is not None):
            known = _MYSQL_CODES.get(code)
            if known is not None:
                # "Can't connect" wraps the socket's error: refused, timed out, unresolvable.
                return by_class if code == 2003 and by_class is not None else known
        state = next((s for s in map(_sqlstate_of, chain) if s is not None), None)
        if state is not None and state in _CONNECTION_SQLSTATES:
            return _CONNECTION_SQLSTATES[state]
        if by_class is not None:
            return by_class
        messages = [_message_of(c) for c in chain]
        for error_type, phrase in _PHRASES:
            if any(phrase.search(m) for m in messages):
                return error_type
        return classify_error(exc)
    except Exception:
        return OTHER_ERROR
