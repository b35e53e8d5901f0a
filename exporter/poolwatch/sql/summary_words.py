"""The summarizer's vocabulary: which keywords are operations, which start or end a list of
tables, which can never be a table or a name, and how DDL and maintenance commands are read
(:mod:`poolwatch.sql.summary` has the rules they implement)."""

from __future__ import annotations

__all__ = [
    "CLAUSE_END",
    "CREATE_MODIFIERS",
    "CREATE_WITH_QUERY",
    "DDL_NAME_SKIP",
    "DML",
    "EXPLAIN_OPTIONS",
    "FROM_SKIP",
    "INTERESTING",
    "MAINTENANCE",
    "NAMELESS_OBJECTS",
    "NOT_NAME",
    "NOT_OP_AFTER",
    "NOT_TABLE",
    "OBJECT_FIRST",
    "OBJECT_NEXT",
    "OPERATIONS",
    "SINGLE_WORD",
    "TARGET_SKIP",
]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


DML = _words("SELECT INSERT UPDATE DELETE MERGE")
# An INSERT/UPDATE/DELETE after these words is a clause, not an operation:
# ON CONFLICT DO UPDATE, ON DUPLICATE KEY UPDATE, FOR [NO KEY] UPDATE, MERGE .. THEN
# UPDATE, ON DELETE CASCADE, trigger events.
NOT_OP_AFTER = _words("DO KEY FOR THEN ON OF OR BEFORE AFTER INSTEAD")
TARGET_SKIP = {
    "INSERT": _words(
        "INTO IGNORE LOW_PRIORITY DELAYED HIGH_PRIORITY OR REPLACE ROLLBACK ABORT FAIL"
    ),
    "UPDATE": _words("ONLY LOW_PRIORITY IGNORE OR REPLACE ROLLBACK ABORT FAIL"),
    "DELETE": _words("FROM ONLY LOW_PRIORITY QUICK IGNORE"),
    "MERGE": _words("INTO ONLY"),
}
FROM_SKIP = _words("LATERAL ONLY")
# Words that end a FROM list (so later commas are not table separators).
CLAUSE_END = _words(
    "WHERE GROUP HAVING ORDER LIMIT OFFSET FETCH FOR WINDOW UNION INTERSECT EXCEPT MINUS"
    " RETURNING SET VALUES WHEN QUALIFY INTO SELECT"
)
# Words that can not be a table where one is expected (malformed or truncated SQL).
NOT_TABLE = CLAUSE_END | _words(
    "WITH ON USING AS JOIN INNER LEFT RIGHT FULL CROSS NATURAL OUTER DEFAULT TABLE INSERT"
    " UPDATE DELETE MERGE"
)

CREATE_MODIFIERS = _words(
    "OR REPLACE TEMP TEMPORARY UNLOGGED GLOBAL LOCAL UNIQUE RECURSIVE CONSTRAINT TRUSTED"
    " PROCEDURAL DEFAULT FULLTEXT SPATIAL"
)
OBJECT_FIRST = _words(
    "TABLE INDEX VIEW MATERIALIZED SEQUENCE SCHEMA DATABASE FUNCTION PROCEDURE ROUTINE"
    " TRIGGER TYPE EXTENSION ROLE USER GROUP DOMAIN AGGREGATE POLICY PUBLICATION"
    " SUBSCRIPTION RULE TABLESPACE COLLATION CONVERSION OPERATOR SERVER STATISTICS"
    " LANGUAGE CAST TRANSFORM EVENT FOREIGN VIRTUAL TEXT ACCESS LARGE SYSTEM"
)
OBJECT_NEXT = {
    "MATERIALIZED": _words("VIEW"),
    "FOREIGN": _words("TABLE DATA"),
    "DATA": _words("WRAPPER"),
    "VIRTUAL": _words("TABLE"),
    "EVENT": _words("TRIGGER"),
    "TEXT": _words("SEARCH"),
    "SEARCH": _words("CONFIGURATION DICTIONARY PARSER TEMPLATE"),
    "ACCESS": _words("METHOD"),
    "USER": _words("MAPPING"),
    "OPERATOR": _words("CLASS FAMILY"),
    "LARGE": _words("OBJECT"),
}
# Object types whose names are people (the metric contract keeps user names out of labels).
NAMELESS_OBJECTS = _words("ROLE USER GROUP MAPPING")
# CREATE of these may carry AS SELECT ..., so the scan goes on after the name.
CREATE_WITH_QUERY = _words("TABLE VIEW")
DDL_NAME_SKIP = _words("IF NOT EXISTS CONCURRENTLY ONLY")
NOT_NAME = _words(
    "ON AS AUTHORIZATION FOR TO SET ALL IN WITH FROM USING OF BY CASCADE RESTRICT RENAME"
    " ADD OWNER INTO"
)
# Maintenance commands: options skipped, object words kept, then a list of tables.
MAINTENANCE: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "TRUNCATE": (_words("TABLE ONLY"), frozenset()),
    "LOCK": (_words("TABLE ONLY"), frozenset()),
    "VACUUM": (_words("FULL FREEZE VERBOSE ANALYZE ANALYSE ONLY"), frozenset()),
    "ANALYZE": (_words("VERBOSE ONLY"), frozenset()),
    "ANALYSE": (_words("VERBOSE ONLY"), frozenset()),
    "CLUSTER": (_words("VERBOSE"), frozenset()),
    "REINDEX": (_words("VERBOSE CONCURRENTLY"), _words("INDEX TABLE SCHEMA DATABASE SYSTEM")),
    "REFRESH": (_words("CONCURRENTLY"), _words("MATERIALIZED VIEW")),
}
EXPLAIN_OPTIONS = _words("ANALYZE ANALYSE VERBOSE QUERY PLAN")
# Commands summarised by their first word alone (their arguments are names of settings,
# savepoints, cursors, channels, roles or prepared statements: not collections).
SINGLE_WORD = _words(
    "BEGIN START COMMIT END ROLLBACK ABORT SAVEPOINT RELEASE SET SHOW RESET DISCARD"
    " LISTEN NOTIFY UNLISTEN CHECKPOINT DO EXECUTE EXEC PREPARE DEALLOCATE GRANT REVOKE"
    " COMMENT SECURITY PRAGMA ATTACH DETACH USE DESCRIBE DESC DECLARE FETCH MOVE CLOSE"
    " LOAD IMPORT REASSIGN KILL FLUSH OPTIMIZE RENAME HANDLER"
)
OPERATIONS = (
    DML
    | SINGLE_WORD
    | frozenset(MAINTENANCE)
    | _words("REPLACE VALUES CREATE ALTER DROP EXPLAIN COPY CALL")
)
# Words the query states react to; any other word is noise there
# (poolwatch.sql.summary_lexer).
INTERESTING = DML | CLAUSE_END | NOT_OP_AFTER | _words("FROM JOIN STRAIGHT_JOIN USING DISTINCT")
