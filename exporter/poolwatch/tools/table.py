"""``poolwatch top``'s rows (:mod:`poolwatch.tools.rows`) as a table: plain fixed-width text
(``--once``, logs, runbooks) or a rich ``Table`` for the live view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .rows import PoolRow

__all__ = ["COLUMNS", "bar", "render_plain", "render_table"]

COLUMNS = ("instance", "pool", "used/idle/max", "sat", "waiting", "longest", "wait p95",
           "timeouts/min", "hold p95", "created/s", "leaked",
           "top statements (share of time)")  # fmt: skip


def _secs(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _num(v: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def bar(r: PoolRow, width: int = 10) -> str:
    """``[###--     ]``: used ``#`` and idle ``-`` against the maximum."""
    cap = r.max if r.max else max(r.used + r.idle, 1.0)
    used = min(width, round(width * r.used / cap))
    idle = min(width - used, round(width * r.idle / cap))
    return "[" + "#" * used + "-" * idle + " " * (width - used - idle) + "]"


def _cells(r: PoolRow) -> list[str]:
    if r.error is not None:
        return [r.instance, "", f"unreachable: {r.error}", *[""] * (len(COLUMNS) - 3)]
    cmax = "∞" if r.max is None else f"{r.max:.0f}"
    leaked = _num(r.leaked)
    statements = ", ".join(f"{s.summary} {s.share:.0%}" for s in r.statements) or "-"
    return [
        r.instance,
        r.pool,
        f"{bar(r)} {r.used:.0f}/{r.idle:.0f}/{cmax}",
        "-" if r.saturation is None else f"{r.saturation:.0%}",
        f"{r.waiting:.0f}",
        _secs(r.longest_wait),
        _secs(r.wait_p95),
        _num(r.timeouts_per_min, "{:.1f}"),
        _secs(r.hold_p95),
        _num(r.created_per_s, "{:.2f}"),
        leaked,
        statements,
    ]


def render_plain(rows: Sequence[PoolRow]) -> str:
    """A plain fixed-width table (``--once``, logs, runbooks)."""
    table = [list(COLUMNS), *(_cells(r) for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in table]  # fmt: skip
    if not rows:
        lines.append("(no pools)")
    return "\n".join(lines)


def render_table(rows: Sequence[PoolRow], title: str = "poolwatch top") -> Any:
    """A rich ``Table`` of the rows, for a live view."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, expand=False)
    for col in COLUMNS[:-1]:  # the numbers never wrap; on a narrow terminal the names shrink
        table.add_column(col, no_wrap=True, min_width=len(col) if col != "instance" else 8)
    table.add_column(COLUMNS[-1], overflow="fold")
    for r in rows:
        cells = _cells(r)
        if r.error is not None:  # the reason goes where text may wrap
            table.add_row(
                cells[0],
                Text("unreachable", style="bold red"),
                *[""] * 9,
                Text(r.error, style="red"),
            )
            continue
        sat = r.saturation or 0.0
        style = "red" if sat >= 1 and r.waiting else "yellow" if sat >= 0.8 else "green"
        table.add_row(
            cells[0], Text(cells[1], style="bold"), Text(cells[2], style=style),
            Text(cells[3], style=style), Text(cells[4], style="red" if r.waiting else ""),
            *cells[5:7], Text(cells[7], style="red" if r.timeouts_per_min else ""),
            *cells[8:10], Text(cells[10], style="red" if r.leaked else ""), cells[11],
        )  # fmt: skip
    return table
