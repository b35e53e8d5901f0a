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
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from poolwatch.sql.redact import code_only, needs_readings

__all__ = [
    "MAX_SUMMARY_LEN",
    "SCAN_LIMIT",
    "TOKEN_LIMIT",
    "UNKNOWN_SUMMARY",
    "operation_name",
    "summarize_sql",
]

MAX_SUMMARY_LEN = 255
SCAN_LIMIT = 64 * 1024
# Significant tokens read at most (a long SELECT list is one token; deeply nested
# parentheses are one each). Bounds the worst case to a few milliseconds.
TOKEN_LIMIT = 2048
UNKNOWN_SUMMARY = "other"

# --------------------------------------------------------------------------------------
# Vocabulary.


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_DML = _words("SELECT INSERT UPDATE DELETE MERGE")
# An INSERT/UPDATE/DELETE after these words is a clause, not an operation:
# ON CONFLICT DO UPDATE, ON DUPLICATE KEY UPDATE, FOR [NO KEY] UPDATE, MERGE .. THEN
# UPDATE, ON DELETE CASCADE, trigger events.
_NOT_OP_AFTER = _words("DO KEY FOR THEN ON OF OR BEFORE AFTER INSTEAD")
_TARGET_SKIP = {
    "INSERT": _words(
        "INTO IGNORE LOW_PRIORITY DELAYED HIGH_PRIORITY OR REPLACE ROLLBACK ABORT FAIL"
    ),
    "UPDATE": _words("ONLY LOW_PRIORITY IGNORE OR REPLACE ROLLBACK ABORT FAIL"),
    "DELETE": _words("FROM ONLY LOW_PRIORITY QUICK IGNORE"),
    "MERGE": _words("INTO ONLY"),
}
_FROM_SKIP = _words("LATERAL ONLY")
# Words that end a FROM list (so later commas are not table separators).
_CLAUSE_END = _words(
    "WHERE GROUP HAVING ORDER LIMIT OFFSET FETCH FOR WINDOW UNION INTERSECT EXCEPT MINUS"
    " RETURNING SET VALUES WHEN QUALIFY INTO SELECT"
)
# Words that can not be a table where one is expected (malformed or truncated SQL).
_NOT_TABLE = _CLAUSE_END | _words(
    "WITH ON USING AS JOIN INNER LEFT RIGHT FULL CROSS NATURAL OUTER DEFAULT TABLE INSERT"
    " UPDATE DELETE MERGE"
)

_CREATE_MODIFIERS = _words(
    "OR REPLACE TEMP TEMPORARY UNLOGGED GLOBAL LOCAL UNIQUE RECURSIVE CONSTRAINT TRUSTED"
    " PROCEDURAL DEFAULT FULLTEXT SPATIAL"
)
_OBJECT_FIRST = _words(
    "TABLE INDEX VIEW MATERIALIZED SEQUENCE SCHEMA DATABASE FUNCTION PROCEDURE ROUTINE"
    " TRIGGER TYPE EXTENSION ROLE USER GROUP DOMAIN AGGREGATE POLICY PUBLICATION"
    " SUBSCRIPTION RULE TABLESPACE COLLATION CONVERSION OPERATOR SERVER STATISTICS"
    " LANGUAGE CAST TRANSFORM EVENT FOREIGN VIRTUAL TEXT ACCESS LARGE SYSTEM"
)
_OBJECT_NEXT = {
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
_NAMELESS_OBJECTS = _words("ROLE USER GROUP MAPPING")
# CREATE of these may carry AS SELECT ..., so the scan goes on after the name.
_CREATE_WITH_QUERY = _words("TABLE VIEW")
_DDL_NAME_SKIP = _words("IF NOT EXISTS CONCURRENTLY ONLY")
_NOT_NAME = _words(
    "ON AS AUTHORIZATION FOR TO SET ALL IN WITH FROM USING OF BY CASCADE RESTRICT RENAME"
    " ADD OWNER INTO"
)
# Maintenance commands: options skipped, object words kept, then a list of tables.
_MAINTENANCE: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "TRUNCATE": (_words("TABLE ONLY"), frozenset()),
    "LOCK": (_words("TABLE ONLY"), frozenset()),
    "VACUUM": (_words("FULL FREEZE VERBOSE ANALYZE ANALYSE ONLY"), frozenset()),
    "ANALYZE": (_words("VERBOSE ONLY"), frozenset()),
    "ANALYSE": (_words("VERBOSE ONLY"), frozenset()),
    "CLUSTER": (_words("VERBOSE"), frozenset()),
    "REINDEX": (_words("VERBOSE CONCURRENTLY"), _words("INDEX TABLE SCHEMA DATABASE SYSTEM")),
    "REFRESH": (_words("CONCURRENTLY"), _words("MATERIALIZED VIEW")),
}
_EXPLAIN_OPTIONS = _words("ANALYZE ANALYSE VERBOSE QUERY PLAN")
# Commands summarised by their first word alone (their arguments are names of settings,
# savepoints, cursors, channels, roles or prepared statements: not collections).
_SINGLE_WORD = _words(
    "BEGIN START COMMIT END ROLLBACK ABORT SAVEPOINT RELEASE SET SHOW RESET DISCARD"
    " LISTEN NOTIFY UNLISTEN CHECKPOINT DO EXECUTE EXEC PREPARE DEALLOCATE GRANT REVOKE"
    " COMMENT SECURITY PRAGMA ATTACH DETACH USE DESCRIBE DESC DECLARE FETCH MOVE CLOSE"
    " LOAD IMPORT REASSIGN KILL FLUSH OPTIMIZE RENAME HANDLER"
)
_OPERATIONS = (
    _DML
    | _SINGLE_WORD
    | frozenset(_MAINTENANCE)
    | _words("REPLACE VALUES CREATE ALTER DROP EXPLAIN COPY CALL")
)


# --------------------------------------------------------------------------------------
# Lexer. One regex per scanner state; each match swallows a run of "noise" (whitespace,
# literals, parameters, operators, comments, and in most states the words and groups that
# can not change the summary) and stops at the next token that can. The catch-all at the
# end means a noise run is never backtracked into, so a literal is lexed exactly once.

_WORD = r"[^\W\d][\w$]*"
_BACKSLASH_BODY = r"[^'\\]*(?:(?:\\.|'')[^'\\]*)*'?"
# Words the query states react to; any other word is noise there.
_INTERESTING = _DML | _CLAUSE_END | _NOT_OP_AFTER | _words("FROM JOIN STRAIGHT_JOIN USING DISTINCT")


def _any_keyword(words: Iterable[str]) -> str:
    """Case-insensitive regex for whole words, as a trie: sre skips a branch on its first
    character class, which a flat alternation of (?i:...) literals does not allow."""
    return _trie(sorted(words)) + r"(?![\w$])"


def _trie(suffixes: list[str]) -> str:
    by_first: dict[str, list[str]] = {}
    for suffix in suffixes:
        if suffix:
            by_first.setdefault(suffix[0], []).append(suffix[1:])
    branches = [
        (f"[{ch}{ch.lower()}]" if ch.isalpha() else re.escape(ch)) + _trie(rest)
        for ch, rest in sorted(by_first.items())
    ]
    if "" in suffixes:
        branches.append("")  # a word may end here; longer ones are tried first
    return "" if branches in ([], [""]) else "(?:" + "|".join(branches) + ")"


def _lexers(standard: bool) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """(table, from, plain) lexers for one reading of quotes and comments.

    The standard reading is PostgreSQL/SQLite: '' escapes, "identifiers", $$dollar$$
    strings, nested /* */. The other reading is MySQL's: backslash escapes, "strings",
    no dollar quotes. Both are tried when they could differ (see summarize_sql).
    """
    if standard:
        strings = r"'[^']*(?:''[^']*)*'?"
        qident = r'"[^"]*(?:""[^"]*)*"?|`[^`]*(?:``[^`]*)*`?'
        dollar = r"\$(?:[^\W\d]\w*)?\$"
    else:
        strings = "'" + _BACKSLASH_BODY + '|"' + _BACKSLASH_BODY.replace("'", '"')
        qident = r"`[^`]*(?:``[^`]*)*`?"
        dollar = r"(?!)"
    # Long runs of blanks, digits and operators go in one step: the regex engine's cost is
    # per alternative tried, so IN (1, 2, ...) must not be one step per number.
    run = r"[\s\d+*=<>!|&^~.\[\]{}]+"
    run_comma = r"[\s\d+*=<>!|&^~.\[\]{},]+"
    # Ordered: E'' before words, '::' before ':name'. '$' is never noise on its own: it may
    # open a dollar quote, which the scanner must see.
    estring = rf"[eE]'{_BACKSLASH_BODY}"
    rest = "|".join(
        [
            r"\$\d+|\?\d*|%\(\w*\)s|%s(?![\w$])|::|:(?:[^\W\d]\w*|\d+)|@@?[^\W\d][\w$.]*",
            r"--[^\n]*",
            r"\#(?![>\-])[^\n]*",  # MySQL comment; '#>' '#>>' '#-' are PostgreSQL operators
            r"[^\w\s'\"`$()\[\],;/\-\#:?%@]+|[:?%@\#]|/(?!\*)|-(?!-)",
        ]
    )
    # Words after a dot are column or schema-qualified names, never keywords.
    dotted = rf"(?<=\.){_WORD}"
    boring = f"{dotted}|(?!{_any_keyword(_INTERESTING)}){_WORD}|{qident}"
    nonop = f"{dotted}|(?!{_any_keyword(_DML)}){_WORD}|{qident}"
    # Parenthesised groups without SELECT/INSERT/... and at most two levels deep (VALUES
    # rows, IN lists, function calls) are noise too, so a huge VALUES list is a few steps.
    # Their insides are atomic (lookahead + backreference, as Python 3.10 has no (?>...)):
    # if the closing parenthesis is missing, no other split of the same text is tried, so
    # a literal or comment can never end early and let its content be read as SQL.
    inner0 = f"(?:{run_comma}|{strings}|{estring}|{nonop}|{rest})"
    group0 = rf"\((?=(?P<g0>{inner0}*))(?P=g0)\)"
    inner1 = f"(?:{run_comma}|{strings}|{estring}|{nonop}|{rest}|{group0})"
    group1 = rf"\((?=(?P<g1>{inner1}*))(?P=g1)\)"
    ident = f"(?:{_WORD}|{qident})"
    sig = (
        rf"(?:(?P<name>{ident}(?:\s*\.\s*{ident})*)|(?P<lp>\()|(?P<rp>\))|(?P<comma>,)"
        rf"|(?P<semi>;)|(?P<bc>/\*)|(?P<dq>{dollar})|(?P<end>\Z)|(?P<junk>.))"
    )

    def lexer(*noise: str) -> re.Pattern[str]:
        # No atomicity needed here: the catch-all at the end of sig always matches, so a
        # noise run is never backtracked into.
        return re.compile(f"(?:{'|'.join(noise)})*{sig}", re.DOTALL)

    return (
        lexer(run, strings, estring, rest),
        lexer(run, strings, estring, boring, rest, group1),
        lexer(run_comma, strings, estring, boring, rest, group1),
    )


_STANDARD = _lexers(True)
_MYSQL = _lexers(False)
# Where the two readings can disagree: a backslash, a dollar quote, or two comment openers.
_READINGS_DIFFER = re.compile(r"\\|\$(?:[^\W\d]\w*)?\$|/\*.*?/\*", re.DOTALL)
_COMMENT_EDGE = re.compile(r"/\*|\*/")
_LPAREN_NEXT = re.compile(r"\s*\(")
_PART = re.compile(r'"((?:[^"]|"")*)"?|`((?:[^`]|``)*)`?|([^\W\d][\w$]*)')
_PLAIN_PART = re.compile(r"[\w$]+")


class _Stop(Exception):
    """End of input, or the summary is full."""


class _Frame:
    """One parenthesis level: its operation and whether a FROM list is open."""

    __slots__ = ("in_from", "op", "using_done")

    def __init__(self, op: str = "", in_from: bool = False) -> None:
        self.op = op
        self.in_from = in_from
        self.using_done = False


_NORMAL, _TABLE = 0, 1


class _Scanner:
    __slots__ = (
        "budget",
        "frames",
        "lex_from",
        "lex_plain",
        "lex_table",
        "nested_comments",
        "parts",
        "pending",
        "pos",
        "prev",
        "prev_end",
        "size",
        "skip",
        "start",
        "state",
        "text",
    )

    def __init__(self, text: str, standard: bool) -> None:
        lexers = _STANDARD if standard else _MYSQL
        self.text = text
        self.nested_comments = standard
        self.lex_table, self.lex_from, self.lex_plain = lexers
        self.pos = 0
        self.parts: list[str] = []
        self.size = -1
        self.pending: tuple[str, str] | None = None
        self.frames: list[_Frame] = [_Frame()]
        self.state = _NORMAL
        self.skip: frozenset[str] = _FROM_SKIP
        self.prev = ""
        self.prev_end = self.start = 0
        self.budget = TOKEN_LIMIT

    # -- plumbing ------------------------------------------------------------------
    def run(self) -> list[str]:
        try:
            while True:
                self.statement()
        except _Stop:
            pass
        return self.parts

    def emit(self, part: str) -> None:
        if not part:
            return
        size = self.size + 1 + len(part)
        if size > MAX_SUMMARY_LEN:
            raise _Stop
        self.size = size
        self.parts.append(part)

    def next(self, lexer: re.Pattern[str]) -> tuple[str, str]:
        if self.pending is not None:
            tok, self.pending = self.pending, None
            return tok
        text = self.text
        while True:
            self.budget -= 1
            if self.budget < 0:
                raise _Stop
            m = lexer.match(text, self.pos)
            assert m is not None  # the lexer ends in a catch-all
            kind = m.lastgroup or "junk"
            self.pos = m.end()
            if kind == "name":
                self.start = m.start(kind)
                return kind, m.group(kind)
            if kind == "bc":
                self.pos = _comment_end(text, self.pos, self.nested_comments)
            elif kind == "dq":
                end = text.find(m.group(kind), self.pos)
                self.pos = len(text) if end < 0 else end + len(m.group(kind))
            elif kind == "end":
                raise _Stop
            elif kind != "junk":
                return kind, ""

    def push_back(self, tok: tuple[str, str]) -> None:
        self.pending = tok

    # -- statements ----------------------------------------------------------------
    def statement(self) -> None:
        self.frames = [_Frame()]
        self.state = _NORMAL
        self.prev = ""
        kind, tok = self.next(self.lex_table)
        while kind == "name" and _keyword(tok) == "EXPLAIN":
            self.emit("EXPLAIN")
            self.skip_options(_EXPLAIN_OPTIONS)
            kind, tok = self.next(self.lex_table)
        if kind == "semi":
            return
        kw = _keyword(tok) if kind == "name" else ""
        if kind == "lp" or kw in _DML or kw == "WITH":
            self.push_back((kind, tok))
            self.dml()
        elif kw == "VALUES":
            self.emit(kw)
            self.dml()
        elif kw == "REPLACE":
            self.emit(kw)
            self.frames[0].op = "INSERT"
            self.expect_table(_TARGET_SKIP["INSERT"])
            self.dml()
        elif kw in ("CREATE", "ALTER", "DROP"):
            self.ddl(kw)
        elif kw in _MAINTENANCE:
            self.maintenance(kw)
        elif kw == "COPY":
            self.emit(kw)
            self.frames[0].op = "COPY"  # its FROM/TO name files, not tables
            self.expect_table(frozenset())
            self.dml()
        elif kw == "CALL":
            self.emit(kw)
            self.names(frozenset(), listing=False)
            self.skip_rest()
        elif kw in _SINGLE_WORD:
            self.emit(kw)
            self.skip_rest()
        else:
            self.skip_rest()

    def skip_options(self, words: frozenset[str]) -> None:
        while True:
            kind, tok = self.next(self.lex_table)
            if kind == "lp":
                self.skip_group()
            elif not (kind == "name" and _keyword(tok) in words):
                self.push_back((kind, tok))
                return

    def skip_group(self) -> None:
        depth = 1
        while depth:
            kind, tok = self.next(self.lex_table)
            if kind == "lp":
                depth += 1
            elif kind == "rp":
                depth -= 1
            elif kind == "semi":
                self.push_back((kind, tok))
                return

    def skip_rest(self, blocks: bool = False) -> None:
        """Up to the end of the statement; with blocks, BEGIN/CASE .. END bodies too."""
        depth = block = 0
        lexer = self.lex_table if blocks else self.lex_plain
        while True:
            kind, tok = self.next(lexer)
            if kind == "lp":
                depth += 1
            elif kind == "rp":
                depth = max(0, depth - 1)
            elif kind == "semi" and depth == 0 and block == 0:
                return
            elif blocks and kind == "name":
                kw = _keyword(tok)
                if kw in ("BEGIN", "CASE"):
                    block += 1
                elif kw == "END":
                    block = max(0, block - 1)

    def names(self, skip: frozenset[str], listing: bool, keep: bool = True) -> None:
        """A name, or with listing a comma list of names, each maybe with (args)."""
        expect = True
        while True:
            kind, tok = self.next(self.lex_table)
            if kind == "name" and expect:
                kw = _keyword(tok)
                if kw in skip:
                    continue
                if kw in _NOT_NAME or kw in _NOT_TABLE:
                    break
                if keep:
                    self.emit(_render_name(tok))
                expect = False
            elif kind == "lp" and not expect:
                self.skip_group()
            elif kind == "comma" and listing and not expect:
                expect = True
            else:
                break
        self.push_back((kind, tok))

    def ddl(self, command: str) -> None:
        self.emit(command)
        kind, tok = self.next(self.lex_table)
        kw = _keyword(tok) if kind == "name" else ""
        while command == "CREATE" and kw in _CREATE_MODIFIERS:
            kind, tok = self.next(self.lex_table)
            kw = _keyword(tok) if kind == "name" else ""
        if kw not in _OBJECT_FIRST:
            self.push_back((kind, tok))
            self.skip_rest(blocks=command == "CREATE")
            return
        objects = [kw]
        while True:
            kind, tok = self.next(self.lex_table)
            kw = _keyword(tok) if kind == "name" else ""
            if kw not in _OBJECT_NEXT.get(objects[-1], ()):
                break
            objects.append(kw)
        self.push_back((kind, tok))
        for word in objects:
            self.emit(word)
        keep = not _NAMELESS_OBJECTS.intersection(objects)
        self.names(_DDL_NAME_SKIP, listing=command == "DROP", keep=keep)
        if command == "CREATE" and objects[-1] in _CREATE_WITH_QUERY:
            self.dml()  # CREATE TABLE .. AS SELECT, CREATE VIEW .. AS SELECT
        else:
            self.skip_rest(blocks=command == "CREATE")

    def maintenance(self, command: str) -> None:
        options, objects = _MAINTENANCE[command]
        self.emit(command)
        while True:
            kind, tok = self.next(self.lex_table)
            kw = _keyword(tok) if kind == "name" else ""
            if kind == "lp":
                self.skip_group()
            elif kw in objects:
                self.emit(kw)
            elif kw not in options:
                break
        self.push_back((kind, tok))
        self.names(options, listing=True)
        self.skip_rest()

    # -- queries -------------------------------------------------------------------
    def expect_table(self, skip: frozenset[str]) -> None:
        self.state = _TABLE
        self.skip = skip

    def dml(self) -> None:
        """SELECT/INSERT/UPDATE/DELETE/MERGE and their nesting, to the end of the statement."""
        frames = self.frames
        while True:
            frame = frames[-1]
            if self.state == _TABLE:
                lexer = self.lex_table
            else:
                lexer = self.lex_from if frame.in_from else self.lex_plain
            kind, tok = self.next(lexer)
            if self.state == _TABLE:
                self.state = _NORMAL
                if kind == "name":
                    kw = _keyword(tok)
                    if kw in self.skip:
                        self.state = _TABLE
                        continue
                    if kw not in _NOT_TABLE:
                        self.emit(_render_name(tok))
                        self.prev = ""
                        continue
                elif kind == "lp":  # subquery or parenthesised join
                    frames.append(_Frame(in_from=True))
                    self.state = _TABLE
                    self.skip = _FROM_SKIP
                    continue
            if kind == "name":
                self.word(frame, tok)
            elif kind == "lp":
                frames.append(_Frame())
            elif kind == "rp":
                if len(frames) > 1:
                    frames.pop()
            elif kind == "comma":
                if frame.in_from:
                    self.expect_table(_FROM_SKIP)
            elif kind == "semi":
                return

    def word(self, frame: _Frame, tok: str) -> None:
        kw = _keyword(tok)
        if not kw:
            return
        # The word before counts only if nothing but blanks separates them: other words
        # are noise to the lexer here, so "DISTINCT a FROM" must not look like
        # "IS DISTINCT FROM".
        start = self.start
        gap = self.text[self.prev_end : start]
        prev = self.prev if gap.isspace() else ""
        self.prev, self.prev_end = kw, start + len(tok)
        if kw in _DML:
            # insert(...)/replace(...) are also MySQL string functions.
            if prev in _NOT_OP_AFTER or (kw != "SELECT" and self.lparen_next()):
                return
            self.emit(kw)
            frame.op = kw
            frame.using_done = False
            frame.in_from = kw in ("UPDATE", "DELETE")
            if kw != "SELECT":
                self.expect_table(_TARGET_SKIP[kw])
        elif kw == "FROM":
            if frame.op in ("SELECT", "DELETE", "UPDATE") and prev != "DISTINCT":
                frame.in_from = True
                self.expect_table(_FROM_SKIP)
        elif kw in ("JOIN", "STRAIGHT_JOIN"):
            frame.in_from = True
            self.expect_table(_FROM_SKIP)
        elif kw == "USING":
            if frame.op in ("DELETE", "MERGE") and not frame.using_done:
                frame.using_done = True
                frame.in_from = True
                self.expect_table(_FROM_SKIP)
        elif kw in _CLAUSE_END:
            frame.in_from = False

    def lparen_next(self) -> bool:
        return _LPAREN_NEXT.match(self.text, self.pos) is not None


def _comment_end(text: str, pos: int, nested: bool) -> int:
    """Position after the block comment opened just before pos (PostgreSQL nests them,
    MySQL does not)."""
    if not nested:
        end = text.find("*/", pos)
        return len(text) if end < 0 else end + 2
    depth = 1
    for m in _COMMENT_EDGE.finditer(text, pos):
        depth += 1 if m.group() == "/*" else -1
        if depth == 0:
            return m.end()
    return len(text)


def _keyword(tok: str) -> str:
    """The upper-cased word if tok is a bare word (a possible keyword), else ""."""
    if "." in tok or tok[0] in '"`':
        return ""
    return tok.upper()


def _render_part(name: str) -> str:
    name = "".join(ch for ch in name if ch.isprintable())
    if not name or _PLAIN_PART.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _render_name(tok: str) -> str:
    parts = []
    for m in _PART.finditer(tok):
        dq, bt, word = m.groups()
        if word is not None:
            parts.append(word)
        elif dq is not None:
            parts.append(_render_part(dq.replace('""', '"')))
        else:
            parts.append(_render_part((bt or "").replace("``", "`")))
    return ".".join(p for p in parts if p)


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
        parts = _Scanner(text, standard=True).run()
        if parts and _READINGS_DIFFER.search(text):
            # Backslashes, dollar quotes or nested comments: what is a literal depends on
            # the dialect. Keep only what the MySQL reading agrees on: a word both readings
            # put at the same place is not literal text under either.
            other = _Scanner(text, standard=False).run()
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
    return word if word in _OPERATIONS else ""


# --------------------------------------------------------------------------------------
# Summaries straight from SQLAlchemy constructs. Anything not plainly a table list returns
# None and the caller summarises the compiled SQL string instead; what is returned here
# must equal summarize_sql(compiled.string) (tested for both PostgreSQL and SQLite).
