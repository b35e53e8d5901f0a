"""redact_sql: nothing inside a literal or comment under any reading of the dialect survives.

The property tests build statements the way one reading (PostgreSQL with or without
standard_conforming_strings, MySQL in its modes, SQLite) lexes them, with a secret planted inside
literals and comments, and check that no secret reaches the redacted text, the query summary or
the slow-statement log line, for that reading's dialect and for an unknown dialect.
"""

from __future__ import annotations

import logging
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

import poolwatch
from poolwatch.sql.redact import DROPPED, READINGS, Reading, redact_sql
from poolwatch.sql.summary import summarize_sql

# Bounded for CI; POOLWATCH_HYPOTHESIS_EXAMPLES raises it for a longer local hunt.
EXAMPLES = int(os.environ.get("POOLWATCH_HYPOTHESIS_EXAMPLES", "120"))
_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)


# --------------------------------------------------------------------------------------
# The cases of issue #13 and one of each quoting form.


@pytest.mark.parametrize(
    ("sql", "dialect", "expected"),
    [
        # Backslash escapes or not: where the literal ends is unknown, so nothing after it.
        ("SELECT 'abc\\' AS a, 'hunter2' AS b", "postgresql", f"SELECT {DROPPED}"),
        ("SELECT 'abc\\' AS a, 'hunter2' AS b", "mysql", f"SELECT {DROPPED}"),
        ("SELECT 'abc\\' AS a, 'hunter2' AS b", None, f"SELECT {DROPPED}"),
        ("SELECT 'abc\\' AS a, 'hunter2' AS b", "sqlite", "SELECT ? AS a, ? AS b"),
        # A backslash both readings agree on.
        ("SELECT 'C:\\\\dir' AS p, 1", "postgresql", "SELECT ? AS p, ?"),
        # Nested comments: PostgreSQL nests them, MySQL and SQLite do not.
        ("SELECT /* a /* b */ hunter2 */ 1", "postgresql", "SELECT ?"),
        ("SELECT /* a /* b */ hunter2 */ 1", None, f"SELECT {DROPPED}"),
        ("SELECT /* a */ 1 /* b */", "mysql", "SELECT ?"),
        ("SELECT /* unterminated hunter2", "postgresql", f"SELECT {DROPPED}"),
        ("SELECT E'it\\'s' AS e, 1", "postgresql", "SELECT ? AS e, ?"),
        ("SELECT 'it''s', x FROM t", None, "SELECT ?, x FROM t"),
        ("SELECT $$hunter2$$, $t$ a $$ b $t$ FROM t", "postgresql", "SELECT ?, ? FROM t"),
        ("SELECT $$hunter2$$ FROM t", None, f"SELECT {DROPPED}"),
        ("SELECT a$$b, $1 FROM t", "postgresql", "SELECT a$$b, $1 FROM t"),
        ("SELECT $x$ unterminated hunter2", "postgresql", f"SELECT {DROPPED}"),
        ("SELECT a -- hunter2\nFROM t", None, "SELECT a FROM t"),
        ("SELECT a # hunter2\nFROM t", "mysql", "SELECT a FROM t"),
        ("SELECT a # b FROM t", "postgresql", "SELECT a # b FROM t"),
        ("SELECT a # hunter2\nFROM t", None, f"SELECT a {DROPPED}"),
        ("SELECT 1--hunter2\n", None, f"SELECT ? {DROPPED}"),
        ('SELECT "hunter2" FROM t', "mysql", "SELECT ? FROM t"),
        (
            'SELECT "Order Items".id FROM "Order Items"',
            "postgresql",
            'SELECT "Order Items".id FROM "Order Items"',
        ),
        ('SELECT "Order Items".id FROM t', None, "SELECT ?.id FROM t"),
        ('SELECT "a\\" , \'hunter2\' "', "mysql", f"SELECT {DROPPED}"),
        ("SELECT `a b`, `it's` FROM t", "mysql", "SELECT `a b`, `it's` FROM t"),
        ("SELECT `it's`, 'hunter2' FROM t", None, f"SELECT {DROPPED}"),
        ("SELECT [it's], 'hunter2' FROM t", "sqlite", "SELECT [it's], ? FROM t"),
        ("SELECT arr[1] FROM t", "postgresql", "SELECT arr[?] FROM t"),
        ("SELECT 'hunter2\x00' FROM t", "postgresql", f"SELECT {DROPPED}"),
        ("SELECT 1 \x00 'hunter2'", "postgresql", f"SELECT ? {DROPPED}"),
        ("SELECT 'naïve ☃', ünïcode FROM t", None, "SELECT ?, ünïcode FROM t"),
        (
            "SELECT N'x', X'ff', U&'d\\0061t', 0x1F, 1.5e3, .5 FROM t1",
            None,
            "SELECT ?, ?, ?, ?, ?, ? FROM t1",
        ),
        ("SELECT ?1, :name, %(p)s, %s FROM t", None, "SELECT ?1, :name, %(p)s, %s FROM t"),
    ],
)
def test_redaction(sql: str, dialect: str | None, expected: str) -> None:
    assert redact_sql(sql, dialect=dialect) == expected


def test_bytes_that_are_not_utf8_stop_the_text() -> None:
    assert redact_sql(b"SELECT a, '\xff hunter2' FROM t") == f"SELECT a, {DROPPED}"


def test_long_statements_are_cut_and_marked() -> None:
    sql = "SELECT " + ", ".join(f"c{i}" for i in range(2000)) + " FROM t"
    out = redact_sql(sql, limit=100)
    assert out == (sql[:100] + " …")
    # A literal cut by the scan limit is not shown either.
    assert (
        redact_sql("SELECT 'hunter2 " + "x" * 1000 + "'", limit=10)
        == f"SELECT {DROPPED}"[:10] + " …"
    )


# --------------------------------------------------------------------------------------
# Statements as one reading lexes them, with secrets in literals and comments.

_SECRET = st.text("bcdfghjklmnpqrstvwxz", min_size=8, max_size=8).map(lambda s: "Zq" + s)
_CODE = [
    "SELECT",
    "a",
    "t.b",
    "FROM",
    "t",
    "WHERE",
    "AS",
    "x1",
    "=",
    ",",
    "(",
    ")",
    "+",
    "||",
    "<>",
    "$1",
    "?",
    "%(p)s",
    ":p",
    "42",
    "3.5",
    "ünï",
    "é",
]
# What literal and comment bodies are made of: every character some reading gives a meaning.
_BODY = [
    "'",
    '"',
    "`",
    "\\",
    "''",
    '""',
    "*/",
    "/*",
    "--",
    "#",
    "$$",
    "$t$",
    "$",
    "\n",
    "\r",
    "[",
    "]",
    ";",
    " ",
    "é",
    "名",
    "\u2028",
    "E'",
    "x",
    "1",
]


def _body(draw: st.DrawFn, secret: str) -> str:
    parts = draw(st.lists(st.sampled_from(_BODY), max_size=8))
    parts.insert(draw(st.integers(0, len(parts))), secret)
    return "".join(parts)


def _quoted(body: str, quote: str, backslash: bool, draw: st.DrawFn) -> str:
    out = []
    for ch in body:
        if ch == quote:
            out.append(
                draw(st.sampled_from([quote * 2, "\\" + quote] if backslash else [quote * 2]))
            )
        elif ch == "\\" and backslash:
            out.append("\\\\")
        else:
            out.append(ch)
    return quote + "".join(out) + quote


def _closes_once(body: str) -> bool:
    """A nested comment body that closes only at its end: PostgreSQL's lexer, where the token
    that starts first wins."""
    depth, i = 1, 0
    text = body + "*/"
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i == len(text)
        else:
            i += 1
    return False


def _secret_fragment(draw: st.DrawFn, r: Reading, secret: str) -> str:
    kinds = ["string", "block", "line"]
    kinds += ["estring"] if r.e_strings else []
    kinds += ["dollar"] if r.dollar_quotes else []
    kinds += ["dq"] if r.dq_string else []
    kinds += ["hash"] if r.hash_comments else []
    kind = draw(st.sampled_from(kinds))
    body = _body(draw, secret)
    if kind == "string":
        prefix = draw(st.sampled_from(["", "N", "X", "B", "U&"]))
        return prefix + _quoted(body, "'", r.backslash, draw)
    if kind == "estring":
        return "E" + _quoted(body, "'", True, draw)
    if kind == "dq":
        return _quoted(body, '"', r.backslash, draw)
    if kind == "dollar":
        tag = draw(st.sampled_from(["", "t", "q1"]))
        return f"${tag}$" + body.replace(f"${tag}$", "").replace("$", "") + f"${tag}$"
    if kind == "block":
        closes = _closes_once(body) if r.nested_comments else (body + "*/").find("*/") == len(body)
        if not closes:
            body = body.replace("*", "").replace("/", "")
        return "/*" + body + "*/"
    body = body.replace("\n", " ").replace("\r", " ")
    if kind == "hash":
        return "#" + body + "\n"
    return "-- " + body + "\n"


def _noise_fragment(draw: st.DrawFn, r: Reading) -> str:
    """Quoted names with awkward insides, which are not secret under this reading."""
    forms = [_quoted(_body(draw, "n"), '"', False, draw)] if not r.dq_string else []
    if r.backticks:
        forms.append(_quoted(_body(draw, "n"), "`", False, draw))
    if r.brackets:
        forms.append("[" + _body(draw, "n").replace("]", "") + "]")
    return draw(st.sampled_from(forms)) if forms else "a"


@st.composite
def _statements(draw: st.DrawFn, r: Reading) -> tuple[str, list[str]]:
    secrets: list[str] = []
    parts = ["SELECT"]
    for _ in range(draw(st.integers(1, 10))):
        choice = draw(st.integers(0, 9))
        if choice < 4:
            secret = draw(_SECRET)
            secrets.append(secret)
            parts.append(_secret_fragment(draw, r, secret))
        elif choice == 4:
            parts.append(_noise_fragment(draw, r))
        else:
            parts.append(draw(st.sampled_from(_CODE)))
    parts += ["FROM", "t"]
    seps = draw(st.lists(st.sampled_from([" ", "\n", "\t", "  "]), min_size=len(parts)))
    return "".join(p + s for p, s in zip(parts, seps, strict=False)), secrets


_ALL_READINGS = sorted({r for rs in READINGS.values() for r in rs}, key=lambda r: r.name)


@pytest.mark.parametrize("reading", _ALL_READINGS, ids=[r.name for r in _ALL_READINGS])
def test_no_secret_survives_redaction_or_summary(reading: Reading) -> None:
    # The reading's own dialects, one SQLAlchemy knows but poolwatch has no readings for (all
    # readings apply), and none at all.
    dialects = [d for d, rs in READINGS.items() if reading in rs] + ["oracle"]

    @_SETTINGS
    @given(_statements(reading))
    def check(case: tuple[str, list[str]]) -> None:
        sql, secrets = case
        outputs = [redact_sql(sql, dialect=d) for d in [*dialects, None]]
        # Summaries are made with the engine's dialect (statements.py passes it).
        outputs += [summarize_sql(sql, d) for d in dialects]
        for out in outputs:
            for secret in secrets:
                assert secret not in out, (sql, out)

    check()


# --------------------------------------------------------------------------------------
# The slow-statement log of a real engine on the real PostgreSQL.

_PG = READINGS["postgresql"][0]


@st.composite
def _pg_select(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A SELECT PostgreSQL runs, its literals and comments carrying secrets."""
    secrets: list[str] = []
    columns = []
    for i in range(draw(st.integers(1, 4))):
        secret = draw(_SECRET)
        secrets.append(secret)
        body = _body(draw, secret).replace("\x00", "")
        kind = draw(st.sampled_from(["string", "estring", "dollar"]))
        if kind == "string":
            lit = _quoted(body, "'", False, draw)
        elif kind == "estring":
            lit = "E" + _quoted(body, "'", True, draw)
        else:
            lit = "$q$" + body.replace("$q$", "") + "$q$"
        columns.append(f"{lit}::text AS c{i}")
    secret = draw(_SECRET)
    secrets.append(secret)
    comment = _secret_fragment(draw, _PG, secret)
    while not comment.startswith(("/*", "--")):
        comment = _secret_fragment(draw, _PG, secret)
    return "SELECT " + ", ".join(columns) + " " + comment, secrets


def test_no_secret_in_the_slow_statement_log(postgres_url, registry, make_engine, caplog) -> None:
    engine = make_engine(postgres_url, pool_size=1)
    poolwatch.instrument(
        engine, registry=registry, name="redact-slow-log", slow_query_threshold=1e-9
    )
    with engine.connect() as c:  # the dialect's first-connect statements are logged too
        c.execute(text("SELECT 1"))

    @settings(
        max_examples=min(EXAMPLES, 30),
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.large_base_example,
        ],
    )
    @given(_pg_select())
    def check(case: tuple[str, list[str]]) -> None:
        sql, secrets = case
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="poolwatch"), engine.connect() as c:
            row = c.execute(text(sql.replace(":", "\\:"))).one()
        assert all(any(s in v for v in row) for s in secrets[:-1])  # the server saw them
        lines = [r.getMessage() for r in caplog.records if "slow statement" in r.getMessage()]
        assert len(lines) == 1
        for secret in secrets:
            assert secret not in lines[0], (sql, lines[0])

    check()


def test_a_mysql_string_in_a_table_position_never_reaches_the_summary_label(
    registry, make_engine
) -> None:
    # Double quotes make a string on MySQL: the summary of the statement that failed with it must
    # not take it for a table name (the statement's own dialect decides how it is read).
    pytest.importorskip("pymysql")
    from prometheus_client import generate_latest

    from tests.support.services import unavailable

    engine = make_engine("mysql+pymysql://root@127.0.0.1:3306/test")
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as e:
        unavailable(f"MariaDB at 127.0.0.1:3306 ({type(e).__name__})")
    poolwatch.instrument(engine, registry=registry, name="redact-mysql-summary")
    with engine.connect() as c:
        with pytest.raises(Exception):  # noqa: B017 - the server's syntax error, whatever class
            c.exec_driver_sql('SELECT 1 FROM "Zqsecretlabel"')
        c.exec_driver_sql("SELECT 1 FROM DUAL # Zqsecretcomment")
    exposition = generate_latest(registry).decode()
    assert 'db_query_summary="SELECT"' in exposition
    assert "Zqsecret" not in exposition
