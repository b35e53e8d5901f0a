"""The summarizer's statement shapes: which tokens of a statement are its operations and the
collections they touch (the rules in :mod:`poolwatch.sql.summary`), read from
:class:`~poolwatch.sql.summary_lexer.Tokens`, one parenthesis level at a time."""

from __future__ import annotations

from poolwatch.sql.summary_lexer import LPAREN_NEXT, Stop, Tokens, keyword, render_name
from poolwatch.sql.summary_words import (
    CLAUSE_END,
    CREATE_MODIFIERS,
    CREATE_WITH_QUERY,
    DDL_NAME_SKIP,
    DML,
    EXPLAIN_OPTIONS,
    FROM_SKIP,
    MAINTENANCE,
    NAMELESS_OBJECTS,
    NOT_NAME,
    NOT_OP_AFTER,
    NOT_TABLE,
    OBJECT_FIRST,
    OBJECT_NEXT,
    SINGLE_WORD,
    TARGET_SKIP,
)

__all__ = ["MAX_SUMMARY_LEN", "Scanner"]

MAX_SUMMARY_LEN = 255


class _Frame:
    """One parenthesis level: its operation and whether a FROM list is open."""

    __slots__ = ("in_from", "op", "using_done")

    def __init__(self, op: str = "", in_from: bool = False) -> None:
        self.op = op
        self.in_from = in_from
        self.using_done = False


_NORMAL, _TABLE = 0, 1


class Scanner(Tokens):
    """One statement text's summary words, in order (:meth:`run`)."""

    __slots__ = ("frames", "parts", "prev", "prev_end", "size", "skip", "state")

    def __init__(self, text: str, standard: bool) -> None:
        super().__init__(text, standard)
        self.parts: list[str] = []
        self.size = -1
        self.frames: list[_Frame] = [_Frame()]
        self.state = _NORMAL
        self.skip: frozenset[str] = FROM_SKIP
        self.prev = ""
        self.prev_end = 0

    # -- the summary -----------------------------------------------------------------
    def run(self) -> list[str]:
        try:
            while True:
                self.statement()
        except Stop:
            pass
        return self.parts

    def emit(self, part: str) -> None:
        if not part:
            return
        size = self.size + 1 + len(part)
        if size > MAX_SUMMARY_LEN:
            raise Stop
        self.size = size
        self.parts.append(part)

    # -- statements ----------------------------------------------------------------
    def statement(self) -> None:
        self.frames = [_Frame()]
        self.state = _NORMAL
        self.prev = ""
        kind, tok = self.next(self.lex_table)
        while kind == "name" and keyword(tok) == "EXPLAIN":
            self.emit("EXPLAIN")
            self.skip_options(EXPLAIN_OPTIONS)
            kind, tok = self.next(self.lex_table)
        if kind == "semi":
            return
        kw = keyword(tok) if kind == "name" else ""
        if kind == "lp" or kw in DML or kw == "WITH":
            self.push_back((kind, tok))
            self.dml()
        elif kw == "VALUES":
            self.emit(kw)
            self.dml()
        elif kw == "REPLACE":
            self.emit(kw)
            self.frames[0].op = "INSERT"
            self.expect_table(TARGET_SKIP["INSERT"])
            self.dml()
        elif kw in ("CREATE", "ALTER", "DROP"):
            self.ddl(kw)
        elif kw in MAINTENANCE:
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
        elif kw in SINGLE_WORD:
            self.emit(kw)
            self.skip_rest()
        else:
            self.skip_rest()

    def skip_options(self, words: frozenset[str]) -> None:
        while True:
            kind, tok = self.next(self.lex_table)
            if kind == "lp":
                self.skip_group()
            elif not (kind == "name" and keyword(tok) in words):
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
                kw = keyword(tok)
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
                kw = keyword(tok)
                if kw in skip:
                    continue
                if kw in NOT_NAME or kw in NOT_TABLE:
                    break
                if keep:
                    self.emit(render_name(tok))
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
        kw = keyword(tok) if kind == "name" else ""
        while command == "CREATE" and kw in CREATE_MODIFIERS:
            kind, tok = self.next(self.lex_table)
            kw = keyword(tok) if kind == "name" else ""
        if kw not in OBJECT_FIRST:
            self.push_back((kind, tok))
            self.skip_rest(blocks=command == "CREATE")
            return
        objects = [kw]
        while True:
            kind, tok = self.next(self.lex_table)
            kw = keyword(tok) if kind == "name" else ""
            if kw not in OBJECT_NEXT.get(objects[-1], ()):
                break
            objects.append(kw)
        self.push_back((kind, tok))
        for word in objects:
            self.emit(word)
        keep = not NAMELESS_OBJECTS.intersection(objects)
        self.names(DDL_NAME_SKIP, listing=command == "DROP", keep=keep)
        if command == "CREATE" and objects[-1] in CREATE_WITH_QUERY:
            self.dml()  # CREATE TABLE .. AS SELECT, CREATE VIEW .. AS SELECT
        else:
            self.skip_rest(blocks=command == "CREATE")

    def maintenance(self, command: str) -> None:
        options, objects = MAINTENANCE[command]
        self.emit(command)
        while True:
            kind, tok = self.next(self.lex_table)
            kw = keyword(tok) if kind == "name" else ""
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
                    kw = keyword(tok)
                    if kw in self.skip:
                        self.state = _TABLE
                        continue
                    if kw not in NOT_TABLE:
                        self.emit(render_name(tok))
                        self.prev = ""
                        continue
                elif kind == "lp":  # subquery or parenthesised join
                    frames.append(_Frame(in_from=True))
                    self.state = _TABLE
                    self.skip = FROM_SKIP
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
                    self.expect_table(FROM_SKIP)
            elif kind == "semi":
                return

    def word(self, frame: _Frame, tok: str) -> None:
        kw = keyword(tok)
        if not kw:
            return
        # The word before counts only if nothing but blanks separates them: other words
        # are noise to the lexer here, so "DISTINCT a FROM" must not look like
        # "IS DISTINCT FROM".
        start = self.start
        gap = self.text[self.prev_end : start]
        prev = self.prev if gap.isspace() else ""
        self.prev, self.prev_end = kw, start + len(tok)
        if kw in DML:
            # insert(...)/replace(...) are also MySQL string functions.
            if prev in NOT_OP_AFTER or (kw != "SELECT" and self.lparen_next()):
                return
            self.emit(kw)
            frame.op = kw
            frame.using_done = False
            frame.in_from = kw in ("UPDATE", "DELETE")
            if kw != "SELECT":
                self.expect_table(TARGET_SKIP[kw])
        elif kw == "FROM":
            if frame.op in ("SELECT", "DELETE", "UPDATE") and prev != "DISTINCT":
                frame.in_from = True
                self.expect_table(FROM_SKIP)
        elif kw in ("JOIN", "STRAIGHT_JOIN"):
            frame.in_from = True
            self.expect_table(FROM_SKIP)
        elif kw == "USING":
            if frame.op in ("DELETE", "MERGE") and not frame.using_done:
                frame.using_done = True
                frame.in_from = True
                self.expect_table(FROM_SKIP)
        elif kw in CLAUSE_END:
            frame.in_from = False

    def lparen_next(self) -> bool:
        return LPAREN_NEXT.match(self.text, self.pos) is not None
