"""The summarizer's tokens: the lexers of SQL text and the stream of significant tokens.

One regex per scanner state; each match swallows a run of "noise" (whitespace, literals,
parameters, operators, comments, and in most states the words and groups that can not change the
summary) and stops at the next token that can. The catch-all at the end means a noise run is never
backtracked into, so a literal is lexed exactly once. :mod:`poolwatch.sql.summary_scanner` reads
the tokens; :mod:`poolwatch.sql.summary` says what a summary is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from poolwatch.sql.summary_words import DML, INTERESTING

__all__ = [
    "LPAREN_NEXT",
    "MYSQL",
    "READINGS_DIFFER",
    "STANDARD",
    "TOKEN_LIMIT",
    "Stop",
    "Tokens",
    "keyword",
    "render_name",
]

# Significant tokens read at most (a long SELECT list is one token; deeply nested
# parentheses are one each). Bounds the worst case to a few milliseconds.
TOKEN_LIMIT = 2048

_WORD = r"[^\W\d][\w$]*"
_BACKSLASH_BODY = r"[^'\\]*(?:(?:\\.|'')[^'\\]*)*'?"


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
    boring = f"{dotted}|(?!{_any_keyword(INTERESTING)}){_WORD}|{qident}"
    nonop = f"{dotted}|(?!{_any_keyword(DML)}){_WORD}|{qident}"
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


STANDARD = _lexers(True)
MYSQL = _lexers(False)
# Where the two readings can disagree: a backslash, a dollar quote, or two comment openers.
READINGS_DIFFER = re.compile(r"\\|\$(?:[^\W\d]\w*)?\$|/\*.*?/\*", re.DOTALL)
_COMMENT_EDGE = re.compile(r"/\*|\*/")
LPAREN_NEXT = re.compile(r"\s*\(")
_PART = re.compile(r'"((?:[^"]|"")*)"?|`((?:[^`]|``)*)`?|([^\W\d][\w$]*)')
_PLAIN_PART = re.compile(r"[\w$]+")


class Stop(Exception):
    """End of input, or the summary is full."""


class Tokens:
    """The significant tokens of one statement text under one reading of its quotes and
    comments, one at a time (a token pushed back is read again next), at most
    :data:`TOKEN_LIMIT` of them."""

    __slots__ = (
        "budget",
        "lex_from",
        "lex_plain",
        "lex_table",
        "nested_comments",
        "pending",
        "pos",
        "start",
        "text",
    )

    def __init__(self, text: str, standard: bool) -> None:
        lexers = STANDARD if standard else MYSQL
        self.text = text
        self.nested_comments = standard
        self.lex_table, self.lex_from, self.lex_plain = lexers
        self.pos = 0
        self.pending: tuple[str, str] | None = None
        self.start = 0
        self.budget = TOKEN_LIMIT

    def next(self, lexer: re.Pattern[str]) -> tuple[str, str]:
        if self.pending is not None:
            tok, self.pending = self.pending, None
            return tok
        text = self.text
        while True:
            self.budget -= 1
            if self.budget < 0:
                raise Stop
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
                raise Stop
            elif kind != "junk":
                return kind, ""

    def push_back(self, tok: tuple[str, str]) -> None:
        self.pending = tok


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


def keyword(tok: str) -> str:
    """The upper-cased word if tok is a bare word (a possible keyword), else ""."""
    if "." in tok or tok[0] in '"`':
        return ""
    return tok.upper()


def _render_part(name: str) -> str:
    name = "".join(ch for ch in name if ch.isprintable())
    if not name or _PLAIN_PART.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def render_name(tok: str) -> str:
    """A (dotted) name token as a summary word: quotes dropped where the part is plain."""
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
