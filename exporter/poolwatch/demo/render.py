"""The view's two renderings: a plain status line, and the rich live view with the latest log
records in a panel beneath (:class:`LogPanel`)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from .view import WAIT_WINDOW, PoolRow
from .workload import PHASES, Phase

__all__ = [
    "COLUMNS",
    "PHASE_WIDTH",
    "VIEW_WIDTH",
    "LogPanel",
    "pool_table",
    "render_plain",
    "render_rich",
]

PHASE_WIDTH = max(len(p.name) for p in PHASES)  # the plain line pads the phase to it


def _p99_label(window: float) -> str:
    return f"wait p99 ({window:g} s)"


def render_plain(elapsed: float, total: float, phase: Phase, r: PoolRow) -> str:
    """One status line; the same width whatever the phase."""
    progress = f"{elapsed:5.1f}s" + (f"/{total:.0f}s" if total > 0 else "")
    return (
        f"[{progress}] {phase.name:<{PHASE_WIDTH}} used {r.used}/{r.max} idle {r.idle}"
        f" waiting {r.waiting:>2} {_p99_label(r.window)} {r.wait_p99 * 1000:5.0f} ms"
        f" timeouts {r.timeouts} leaked {r.leaked}"
    )


class LogPanel(logging.Handler):
    """Keeps the last log records for the live view, which shows them beneath its table instead
    of letting them scroll through it. A record of several lines (the leak report and where the
    connection was checked out) keeps its first line and its innermost frame; a record that
    repeats the one before but for its measurements (floats) is counted, not repeated."""

    def __init__(self, lines: int = 6) -> None:
        super().__init__(logging.INFO)
        self.lines = lines
        # (what makes a repeat, style, lines, times seen)
        self._entries: deque[tuple[object, str, list[str], int]] = deque(maxlen=lines)
        self._lock_entries = threading.Lock()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        first, *rest = text.splitlines() or [""]
        style = (
            "red"
            if record.levelno >= logging.ERROR
            else "yellow"
            if record.levelno >= logging.WARNING
            else "dim"
        )
        # "most recent call last": the last frame (two lines, file and source) says who did it.
        tail = [f"    {line.strip()}" for line in rest[-2:]]
        args = record.args if isinstance(record.args, tuple) else ()
        key = (record.name, record.levelno, record.msg, [a for a in args if type(a) is not float])
        with self._lock_entries:
            seen = 1
            if self._entries and self._entries[-1][0] == key:
                seen += self._entries.pop()[3]
            self._entries.append((key, style, [first, *tail], seen))

    def rendered(self) -> list[tuple[str, str]]:
        """(style, line) pairs, exactly ``lines`` of them (blank ones first)."""
        with self._lock_entries:
            entries = list(self._entries)
        out: list[tuple[str, str]] = []
        for _, style, (first, *tail), seen in entries:
            out.append((style, f"(×{seen}) {first}" if seen > 1 else first))
            out.extend((style, line) for line in tail)
        out = out[-self.lines :]
        return [("", "")] * (self.lines - len(out)) + out


# Fixed widths, so that the view keeps its width whatever the phase and the numbers, within the
# 80 columns of a default terminal.
COLUMNS: tuple[tuple[str, int], ...] = (
    ("used/max", 8), ("", 10), ("idle", 4), ("waiting", 7),
    ("wait p99", len(_p99_label(WAIT_WINDOW))), ("timeouts", 8), ("leaked", 6),
)  # fmt: skip
# Each column's width, its padding of one on either side, and the borders around and between.
VIEW_WIDTH = sum(w for _, w in COLUMNS) + 3 * len(COLUMNS) + 1


def pool_table(r: PoolRow) -> Any:
    """The pool's numbers as a one-row table of fixed column widths.

    The numbers are ``poolwatch top``'s (PoolView reads them with its row model); its
    ``render_table`` is not used here because its twelve columns take their width from their
    content (past 80 columns, and the statements column wraps), and it shows a p95 without
    its window. A renderer of top's with fixed widths and a chosen set of columns would
    replace this function and nothing else."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    cmax = r.max or 1
    bar = ProgressBar(
        total=cmax, completed=r.used, width=COLUMNS[1][1],
        complete_style="red" if r.used >= cmax else "green",
    )  # fmt: skip
    table = Table(expand=False)
    for i, (col, width) in enumerate(COLUMNS):
        header = _p99_label(r.window) if col == "wait p99" else col
        table.add_column(header, width=width, no_wrap=True, justify="left" if i < 2 else "right")
    table.add_row(
        f"{r.used}/{cmax}", bar, str(r.idle),
        Text(str(r.waiting), style="red" if r.waiting else ""),
        f"{r.wait_p99 * 1000:.0f} ms", str(r.timeouts), str(r.leaked),
    )  # fmt: skip
    return table


def render_rich(
    elapsed: float,
    total: float,
    phase: Phase,
    r: PoolRow,
    title: str,
    panel: LogPanel | None = None,
) -> Any:
    """The live view: the title's lines, the phase, the pool's row, the run's progress, what
    "wait p99" covers and, beneath, the latest log records in a panel of fixed height; every
    line at most VIEW_WIDTH wide, whatever it shows."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    def line(text: str | Text, style: str = "") -> Text:
        t = Text(text, style=style) if isinstance(text, str) else text
        t.no_wrap, t.overflow = True, "ellipsis"
        return t

    number = PHASES.index(phase) + 1 if phase in PHASES else 0
    heading = Text.assemble(
        (f"phase {number}/{len(PHASES)}  ", "dim"), (phase.name, "bold"), " — ",
        (phase.description, "italic"),
    )  # fmt: skip
    done = ProgressBar(
        total=total or 1, completed=min(elapsed, total) if total else 0, width=VIEW_WIDTH
    )
    # A grid, one row each: a progress bar ends no line of its own.
    lines = Table.grid()
    for i, text in enumerate(title.splitlines()):
        lines.add_row(line(text, "bold" if i == 0 else "dim"))
    lines.add_row(line(heading))
    lines.add_row(pool_table(r))
    lines.add_row(done)
    lines.add_row(
        line(f"{elapsed:.0f}s" + (f" of {total:.0f}s" if total else " (Ctrl-C to stop)"), "dim")
    )
    lines.add_row(
        line(
            f"{_p99_label(r.window)}: the 99th percentile of checkout waits over the last"
            f" {r.window:g} s",
            "dim",
        )
    )
    parts: list[Any] = [lines]
    if panel is not None:
        body = Text(no_wrap=True, overflow="ellipsis")
        for i, (style, text) in enumerate(panel.rendered()):
            body.append(("\n" if i else "") + text, style=style)
        parts.append(Panel(body, title="log", title_align="left", width=VIEW_WIDTH))
    return Group(*parts)
