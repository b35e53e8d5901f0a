"""Low-cardinality query summaries for the ``db_query_summary`` label.

A summary follows the OpenTelemetry ``db.query.summary`` idea: the operations and the
collections they touch, in order of appearance, e.g. ``SELECT orders customers`` or
``INSERT shipping_details SELECT orders``. Rules (also in the README):

* Operations are upper-cased keywords: ``SELECT``, ``INSERT``, ``UPDATE``, ``DELETE``,
  ``MERGE``, ``REPLACE``; every nested ``SELECT`` (subquery, CTE body, ``UNION`` branch)
  counts as its own operation where it appears. ``WITH`` itself is not an operation, so
  ``WITH r AS (SELECT .. FROM orders) SELECT .. FROM r`` is ``SELECT orders SELECT r``.
* Collections are the tables after ``FROM``/``JOIN``/``INTO``/``UPDATE``/``USING`` (for
  ``DELETE``/``MERGE``) and table functions (``FROM generate_series(..)``); aliases,
  columns and the ``DO UPDATE``/``ON DUPLICATE KEY UPDATE`` of an upsert are not.
* Identifiers keep their spelling and schema prefix (``public.Users``); quotes are dropped
  when the identifier is made of word characters only, otherwise it is written in double
  quotes with inner quotes doubled (``"Order Items"``), so one summary word is one name.
* DDL keeps the object type: ``CREATE TABLE users``, ``DROP INDEX ix_a``; role and user
  names are never kept (``CREATE ROLE``). Maintenance: ``TRUNCATE t``, ``VACUUM t``,
  ``COPY t``, ``CALL proc``, ``EXPLAIN SELECT t``. Other commands are one word
  (``BEGIN``, ``SET``, ``SHOW``, ``GRANT``...). Statements split by ``;`` are concatenated.
* Never a literal, a parameter or comment text. At most 255 characters, cut between words.
  Only the first 64 KiB of a statement is read. Anything unrecognised is ``other``.

The words these rules react to are in :mod:`poolwatch.sql.summary_words`, the lexers in
:mod:`poolwatch.sql.summary_lexer`, the rules themselves in :mod:`poolwatch.sql.summary_scanner`.
"""

from __future__ import annotations

from poolwatch.sql.redact import code_only, needs_readings
from poolwatch.sql.summary_lexer import READINGS_DIFFER, TOKEN_LIMIT
from poolwatch.sql.summary_scanner import MAX_SUMMARY_LEN, Scanner
from poolwatch.sql.summary_words import OPERATIONS

__all__ = [
    "MAX_SUMMARY_LEN",
    "SCAN_LIMIT",
    "TOKEN_LIMIT",
    "UNKNOWN_SUMMARY",
    "operation_name",
    "summarize_sql",
]

SCAN_LIMIT = 64 * 1024
UNKNOWN_SUMMARY = "other"


def _prefix(statement: object) -> str:
    if isinstance(statement, str):
        return statement[:SCAN_LIMIT]
    if isinstance(statement, (bytes, bytearray, memoryview)):
        return bytes(statement[:SCAN_LIMIT]).decode("utf-8", "replace")
    return ""


def summarize_sql(statement: str | bytes, dialect: str | None = None) -> str:
    """Summary of a SQL string: operations and collections, never literals. Never raises.

    With ``dialect`` (a SQLAlchemy dialect name) the text is first reduced to what every reading
    of that dialect agrees is neither a literal nor a comment (:func:`poolwatch.sql.redact.
    code_only`): a MySQL ``"string"`` or a ``#`` comment cannot become a table name, and nothing
    after the first place where the readings disagree is read."""
    try:
        text = _prefix(statement)
        if dialect is not None and needs_readings(text):
            text = code_only(text, dialect)
        parts = Scanner(text, standard=True).run()
        if parts and READINGS_DIFFER.search(text):
            # Backslashes, dollar quotes or nested comments: what is a literal depends on
            # the dialect. Keep only what the MySQL reading agrees on: a word both readings
            # put at the same place is not literal text under either.
            other = Scanner(text, standard=False).run()
            same = 0
            for mine, theirs in zip(parts, other, strict=False):
                if mine != theirs:
                    break
                same += 1
            parts = parts[:same]
        return " ".join(parts) or UNKNOWN_SUMMARY
    except Exception:  # a summary is never worth failing a query for
        return UNKNOWN_SUMMARY


def operation_name(summary: str) -> str:
    """The operation of a summary (its first word), or "" if it has none."""
    word = summary.split(" ", 1)[0]
    return word if word in OPERATIONS else ""
