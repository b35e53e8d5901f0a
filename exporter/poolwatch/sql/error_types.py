"""The ``error_type`` label of a failed statement.

With a SQLSTATE from the driver (psycopg 3 ``sqlstate``, psycopg2 ``pgcode``, asyncpg
``sqlstate``, pg8000's ``C`` field; SQLAlchemy wrappers are looked through via ``orig``),
the label is the SQLSTATE class name from PostgreSQL's Appendix A, e.g. ``23`` →
``integrity_constraint_violation``; an unknown class is ``sqlstate_<CC>``. Without one it
is the exception class name (``OperationalError``, ``TimeoutError``), restricted to
``[A-Za-z0-9_.]`` and 64 characters. The message is never used: it carries values.
"""

from __future__ import annotations

import re

__all__ = ["OTHER_ERROR", "SQLSTATE_CLASSES", "classify_error"]

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


def classify_error(exc: BaseException) -> str:
    """Low-cardinality ``error_type`` for a statement failure. Never raises."""
    try:
        chain: list[BaseException] = [exc]
        while len(chain) < _MAX_DEPTH:
            inner = _wrapped(chain[-1])
            if inner is None or inner in chain:
                break
            chain.append(inner)
        cause = exc.__cause__
        if isinstance(cause, BaseException) and cause not in chain:
            chain.append(cause)
        for candidate in chain:
            state = _sqlstate_of(candidate)
            if state is not None:
                return SQLSTATE_CLASSES.get(state[:2], f"sqlstate_{state[:2]}")
        # A SQLAlchemy wrapper says less than what it wraps (StatementError around a
        # TypeError from a bind processor, DBAPIError around the driver's class).
        return _name_of(chain[1] if len(chain) > 1 and _wrapped(exc) is not None else exc)
    except Exception:
        return OTHER_ERROR
