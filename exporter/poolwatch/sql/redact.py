"""Statement text with its literals replaced, for span ``db.statement`` and the slow-statement log.

Bound parameters never appear in it (they are not part of the statement text); literals written
into the SQL itself (strings, numbers, dollar-quoted bodies, hex blobs) become ``?`` and comments
are dropped, because comments often carry request data. Words, operators, parameter markers and
quoted identifiers stay, so the text still says what the statement does.

What is a literal depends on how the server reads the text, and one dialect reads it in more than
one way: PostgreSQL with ``standard_conforming_strings`` on or off, MySQL with or without
``NO_BACKSLASH_ESCAPES`` and ``ANSI_QUOTES``, SQLite taking an unknown ``"name"`` as a string.
So the statement is lexed under every reading of its dialect (every reading of every dialect when
the dialect is not known), and text is kept only while all readings agree where each literal,
comment and quoted name starts and ends; a span that some reading calls a literal is a literal.
At the first disagreement, or where a reading does not lex cleanly (an unterminated literal or
comment, a NUL byte, a character that is not valid text), the rest of the statement is dropped
and replaced by `` ?…``: a guess there could print a secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

__all__ = [
    "MAX_REDACTED_LEN",
    "MAX_REGIONS",
    "READINGS",
    "Reading",
    "code_only",
    "needs_readings",
    "readings_for",
    "redact_sql",
]

MAX_REDACTED_LEN = 4096
MAX_REGIONS = 512
"""Literals, comments and quoted names read per statement and reading; the text after the last
one is dropped like text the readings disagree on. With ``_MAX_STEPS`` it bounds the work on a
statement of thousands of literals to a few milliseconds per reading."""
_MAX_STEPS = 4 * MAX_REGIONS
DROPPED = "?…"
"""Written in place of everything after the point where the readings stop agreeing."""


class Reading(NamedTuple):
    """One way a server can read quotes and comments."""

    name: str
    backslash: bool  # a backslash escapes the next character in '...' (and in "..." strings)
    e_strings: bool  # E'...' always takes backslash escapes (PostgreSQL)
    nested_comments: bool  # /* /* */ */ nests (PostgreSQL) or ends at the first */
    hash_comments: bool  # '#' starts a comment to the end of the line (MySQL)
    dash_needs_space: bool  # '--' is a comment only before whitespace or a control (MySQL)
    dash_ends_at_cr: bool  # a '--' comment also ends at a carriage return (PostgreSQL)
    dollar_quotes: bool  # $$...$$ and $tag$...$tag$ (PostgreSQL)
    dq_string: bool  # "..." is a string (MySQL; SQLite when no such column exists)
    backticks: bool  # `name` (MySQL, SQLite)
    brackets: bool  # [name] (SQLite, SQL Server)


def _reading(name: str, **flags: bool) -> Reading:
    defaults = dict.fromkeys(Reading._fields[1:], False)
    defaults.update(flags)
    return Reading(name, **defaults)


_PG = {"e_strings": True, "nested_comments": True, "dash_ends_at_cr": True, "dollar_quotes": True}
_MY = {"hash_comments": True, "dash_needs_space": True, "backticks": True}
READINGS: dict[str, tuple[Reading, ...]] = {
    "postgresql": (
        _reading("postgresql", **_PG),
        _reading("postgresql standard_conforming_strings=off", backslash=True, **_PG),
    ),
    "mysql": (
        _reading("mysql", backslash=True, dq_string=True, **_MY),
        _reading("mysql NO_BACKSLASH_ESCAPES", dq_string=True, **_MY),
        _reading("mysql ANSI_QUOTES", backslash=True, **_MY),
    ),
    "sqlite": (_reading("sqlite", dq_string=True, backticks=True, brackets=True),),
}
READINGS["mariadb"] = READINGS["mysql"]
_ALL = tuple(r for name in ("postgresql", "mysql", "sqlite") for r in READINGS[name])


def readings_for(dialect: str | None) -> tuple[Reading, ...]:
    """The readings of a SQLAlchemy dialect name; every known reading for any other name."""
    return READINGS.get(dialect or "", _ALL)


_LITERAL, _COMMENT, _NAME = 0, 1, 2


class _Region(NamedTuple):
    start: int
    end: int
    kind: int


class _Unclean(Exception):
    def __init__(self, pos: int) -> None:
        self.pos = pos


# Characters that can start a region under some reading, or that no reading accepts. Everything
# else is plain text under every reading and is skipped in one step.
# A digit after a word character or "?" is part of a name or a parameter marker ($1, ?1); a "$"
# after one is part of a PostgreSQL name (a$$b).
_INTERESTING = re.compile(r"['\"`\[#]|--|/\*|(?<![\w$])\$|\.(?=\d)|(?<![\w$?.])\d")
# No reading accepts these: a NUL ends the statement for C code that reads it; a lone surrogate or
# a replaced undecodable byte means the text is not what the server will see.
_NOT_TEXT = re.compile(r"[\x00\ud800-\udfff\ufffd]")
_WORD_CHAR = re.compile(r"[\w$]")
_NUMBER = re.compile(
    r"(?:0[xX][0-9A-Fa-f_]*|0[bBoO][0-9_]*|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)"
    r"(?:[eE][+-]?\d+)?)[\w$]*"
)
_DOLLAR_TAG = re.compile(r"\$(?:[^\W\d]\w*)?\$")
# A quoted name every reading lexes the same inside: words separated by single spaces.
_CLEAN_NAME = re.compile(r"[^\W\d]\w*(?: [^\W\d]\w*)*")
# String prefixes kept with the literal they introduce: E'', N'', X'', B'', U&''.
_PREFIX = re.compile(r"(?:[EeNnXxBb]|[Uu]&)\Z")


def _quoted_pattern(quote: str, backslash: bool) -> re.Pattern[str]:
    # "normal* (special normal*)*": the branches exclude each other, so a failed match backs off
    # in linear time; the closing quote must not be the first of a doubled one.
    q = re.escape(quote)
    normal = f"[^{q}\\\\]*" if backslash else f"[^{q}]*"
    special = f"(?:\\\\.|{q}{q})" if backslash else f"{q}{q}"
    return re.compile(f"{q}{normal}(?:{special}{normal})*{q}(?!{q})", re.DOTALL)


_QUOTED = {(q, b): _quoted_pattern(q, b) for q in "'\"`" for b in (False, True)}


def _quoted_end(text: str, pos: int, quote: str, backslash: bool) -> int:
    """End of the quoted run opened at pos (doubled quotes and, if asked, backslashes escape)."""
    m = _QUOTED[quote, backslash].match(text, pos)
    if m is None:
        raise _Unclean(pos)
    return m.end()


def _block_comment_end(text: str, pos: int, nested: bool) -> int:
    """End of the /* comment opened at pos. Nested, the token that starts first wins, as in
    PostgreSQL's lexer: in "/*/" an opener, in "*/*" a closer. Linear in the text."""
    depth = 1
    i = pos + 2
    close = text.find("*/", i)
    while True:
        if close < 0:
            raise _Unclean(pos)
        opened = text.find("/*", i, close + 1) if nested else -1
        if opened >= 0:
            depth += 1
            i = opened + 2
            if i > close:
                close = text.find("*/", i)
            continue
        depth -= 1
        i = close + 2
        if depth == 0:
            return i
        close = text.find("*/", i)


def _line_end(text: str, pos: int, at_cr: bool) -> int:
    end = text.find("\n", pos)
    if at_cr:
        cr = text.find("\r", pos, end if end >= 0 else len(text))
        if cr >= 0:
            return cr
    return len(text) if end < 0 else end


def _regions(text: str, r: Reading) -> tuple[list[_Region], int]:
    """The literals, comments and quoted names of text under one reading, and where the reading
    stopped lexing cleanly (len(text) if it did not)."""
    out: list[_Region] = []
    pos = 0
    n = len(text)
    steps = 0
    try:
        while True:
            m = _INTERESTING.search(text, pos)
            if m is None:
                return out, n
            i = m.start()
            steps += 1
            if len(out) >= MAX_REGIONS or steps > _MAX_STEPS:
                raise _Unclean(i)
            ch = text[i]
            if ch == "'":
                prefix = _PREFIX.search(text, max(0, i - 2), i)
                start = i
                if prefix is not None and (
                    prefix.start() == 0 or _WORD_CHAR.match(text, prefix.start() - 1) is None
                ):
                    start = prefix.start()
                # E'...' (one letter, not the end of a longer word) takes backslash escapes.
                escapes = r.backslash or (r.e_strings and start == i - 1 and text[start] in "Ee")
                end = _quoted_end(text, i, "'", escapes)
                out.append(_Region(start, end, _LITERAL))
            elif ch == '"':
                if r.dq_string:
                    end = _quoted_end(text, i, '"', r.backslash)
                    out.append(_Region(i, end, _LITERAL))
                else:
                    end = _quoted_end(text, i, '"', False)
                    out.append(_Region(i, end, _NAME))
            elif ch == "`" or (ch == "[" and r.brackets):
                if ch == "`" and not r.backticks:
                    pos = i + 1
                    continue
                end = _quoted_end(text, i, "`", False) if ch == "`" else text.find("]", i) + 1
                if end == 0:
                    raise _Unclean(i)
                # A name with nothing inside that another reading could take for a quote or a
                # comment is plain text to every reading; only the others need comparing.
                if _CLEAN_NAME.fullmatch(text, i + 1, end - 1) is None:
                    out.append(_Region(i, end, _NAME))
            elif ch == "$":
                tag = _DOLLAR_TAG.match(text, i) if r.dollar_quotes else None
                if tag is None:
                    pos = i + 1
                    continue
                close = text.find(tag.group(), tag.end())
                if close < 0:
                    raise _Unclean(i)
                end = close + len(tag.group())
                out.append(_Region(i, end, _LITERAL))
            elif ch == "#":
                if not r.hash_comments:
                    pos = i + 1
                    continue
                end = _line_end(text, i, False)
                out.append(_Region(i, end, _COMMENT))
            elif ch == "-":
                if r.dash_needs_space and not (i + 2 < n and text[i + 2] <= " "):
                    pos = i + 1
                    continue
                end = _line_end(text, i, r.dash_ends_at_cr)
                out.append(_Region(i, end, _COMMENT))
            elif ch == "/":
                end = _block_comment_end(text, i, r.nested_comments)
                out.append(_Region(i, end, _COMMENT))
            elif ch == "[":
                pos = i + 1
                continue
            else:  # a digit, or a dot before one, that starts a number
                number = _NUMBER.match(text, i)
                if number is None:
                    pos = i + 1
                    continue
                end = number.end()
                out.append(_Region(i, end, _LITERAL))
            pos = end
    except _Unclean as e:
        return out, e.pos


# What each reading flag is about: a reading that differs from another only in flags whose
# characters the text does not contain lexes it the same way, so one of them is enough.
_FLAG_TRIGGERS = {
    "backslash": "\\",
    "e_strings": "\\",
    "nested_comments": "/*",
    "hash_comments": "#",
    "dash_needs_space": "--",
    "dash_ends_at_cr": "--",
    "dollar_quotes": "$",
    "dq_string": '"',
    "backticks": "`",
    "brackets": "[",
}


def _distinct(text: str, readings: Iterable[Reading]) -> list[Reading]:
    out: dict[Reading, None] = {}
    for r in readings:
        moot = {flag: False for flag, trigger in _FLAG_TRIGGERS.items() if trigger not in text}
        out[r._replace(name="", **moot)] = None
    return list(out)


def needs_readings(text: str) -> bool:
    """Whether the readings could lex ``text`` differently (else any one of them will do)."""
    return any(trigger in text for trigger in _FLAG_TRIGGERS.values())


def _agreed(text: str, readings: Iterable[Reading]) -> tuple[list[_Region], int]:
    """Regions every reading agrees on, and where the text stops being safe to show."""
    bad = _NOT_TEXT.search(text)
    if bad is not None:
        text = text[: bad.start()]
    results = [_regions(text, r) for r in _distinct(text, readings)]
    cut = min(clean for _, clean in results)
    agreed: list[_Region] = []
    lists = [regions for regions, _ in results]
    for i in range(max(len(x) for x in lists)):
        items = [x[i] if i < len(x) else None for x in lists]
        present = [item for item in items if item is not None]
        first = present[0]
        if len(present) < len(items) or any(
            (item.start, item.end) != (first.start, first.end) for item in present
        ):
            cut = min(cut, *(item.start for item in present))
            break
        if first.end > cut:
            cut = min(cut, first.start)
            break
        # A span some reading takes for a literal is a literal.
        agreed.append(_Region(first.start, first.end, min(item.kind for item in present)))
    return agreed, cut


def redact_sql(
    statement: str | bytes, limit: int = MAX_REDACTED_LEN, *, dialect: str | None = None
) -> str:
    """``statement`` with literals as ``?``, comments dropped, and from the first point where the
    readings of ``dialect`` (a SQLAlchemy dialect name; None: every dialect's) disagree,
    nothing but `` ?…``. At most ``limit`` characters, then `` …``. Never raises."""
    try:
        if isinstance(statement, (bytes, bytearray, memoryview)):
            statement = bytes(statement).decode("utf-8", "replace")
        # Redact a bounded prefix: a multi-megabyte statement must not stall the log call.
        head = statement[: limit * 4]
        regions, cut = _agreed(head, readings_for(dialect))
        parts: list[str] = []
        pos = 0
        for region in regions:
            parts.append(head[pos : region.start])
            if region.kind == _LITERAL:
                parts.append("?")
            elif region.kind == _COMMENT:
                parts.append(" ")
            else:
                parts.append(head[region.start : region.end])
            pos = region.end
        parts.append(head[pos:cut])
        out = " ".join("".join(parts).split())
        if cut < len(head):
            out = f"{out} {DROPPED}" if out else DROPPED
        if len(out) > limit or len(head) < len(statement):
            out = out[:limit] + " …"
        return out
    except Exception:  # never into the application; say nothing rather than guess
        return DROPPED


def code_only(text: str, dialect: str | None = None) -> str:
    """``text`` up to where the readings of ``dialect`` stop agreeing, with every literal as a
    ``?`` and every comment as blanks (quoted names kept): what a summary may be read from."""
    regions, cut = _agreed(text, readings_for(dialect))
    parts: list[str] = []
    pos = 0
    for region in regions:
        parts.append(text[pos : region.start])
        if region.kind == _NAME:
            parts.append(text[region.start : region.end])
        else:
            # Blanks around the marker, so that neighbours do not run together into one word.
            parts.append(" ? " if region.kind == _LITERAL else " ")
        pos = region.end
    parts.append(text[pos:cut])
    return "".join(parts)
