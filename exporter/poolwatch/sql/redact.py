"""Statement text with its literals replaced, for the slow-statement log.

Bound parameters never appear in it (they are not part of the statement text); literals written
into the SQL itself (strings, numbers, dollar-quoted bodies, hex blobs) become ``?`` and
comments are dropped, because comments often carry request data.
"""

from __future__ import annotations

import re

__all__ = ["redact_sql"]

MAX_REDACTED_LEN = 4096

_TOKEN = re.compile(
    r"""
      (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*)?\$.*?(?:\$(?P=tag)?\$|\Z))
    | (?P<string>[EeBbXxNn]?'(?:[^'\\]|''|\\.)*(?:'|\Z))
    | (?P<quoted>"(?:[^"]|"")*(?:"|\Z)|`[^`]*(?:`|\Z)|\[[^\]]*(?:\]|\Z))
    | (?P<param>\$\d+|%\([A-Za-z0-9_]+\)s|%s|:[A-Za-z_][A-Za-z0-9_]*|\?)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<number>(?:0[xX][0-9A-Fa-f]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))
    """,
    re.VERBOSE | re.DOTALL,
)


def _replace(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "comment":
        return " "
    if kind in ("dollar", "string", "number"):
        return "?"
    return m.group(0)


def redact_sql(statement: str | bytes, limit: int = MAX_REDACTED_LEN) -> str:
    if isinstance(statement, bytes):
        statement = statement.decode("utf-8", "replace")
    # Redact a bounded prefix: a multi-megabyte statement must not stall the log call.
    head = statement[: limit * 4]
    out = " ".join(_TOKEN.sub(_replace, head).split())
    if len(out) > limit or len(head) < len(statement):
        out = out[:limit] + " …"
    return out
