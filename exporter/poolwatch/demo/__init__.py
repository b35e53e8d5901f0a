"""``poolwatch demo``: an instrumented workload that runs a pool dry and recovers, in phases.

It uses a SQLite file database in a temporary folder unless ``--db`` names another (SQLite,
PostgreSQL, MySQL/MariaDB), serves ``/metrics`` like an instrumented application would, and shows
the pool live in the terminal. In the user's database it creates two tables of its own, named
``poolwatch_demo_<run id>_*`` so that concurrent demos (the compose stack runs two) never share
them, and drops them when it ends, however it ends short of SIGKILL.

The pieces: :mod:`~poolwatch.demo.database` (the engine and the demo's tables),
:mod:`~poolwatch.demo.workload` (the phases and the threads), :mod:`~poolwatch.demo.view` (the
pool's numbers), :mod:`~poolwatch.demo.render` (the status line and the live view),
:mod:`~poolwatch.demo.signals` and :mod:`~poolwatch.demo.runner` (serving, setting up, running,
cleaning up); this module is the command line.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .database import DemoError, DemoTables
from .render import VIEW_WIDTH, LogPanel, render_plain, render_rich
from .runner import DEFAULT_PORT, run
from .view import WAIT_WINDOW, PoolRow, PoolView
from .workload import PHASES, Phase, Workload

__all__ = [
    "DEFAULT_PORT",
    "PHASES",
    "VIEW_WIDTH",
    "WAIT_WINDOW",
    "DemoError",
    "DemoTables",
    "LogPanel",
    "Phase",
    "PoolRow",
    "PoolView",
    "Workload",
    "add_arguments",
    "main",
    "render_plain",
    "render_rich",
    "run",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", help="database URL: SQLite, PostgreSQL or MySQL/MariaDB (default: a SQLite file "
        "in a temp folder); the demo's tables are created there and dropped at exit",
    )  # fmt: skip
    parser.add_argument(
        "--duration", type=float, default=60.0,
        help="seconds for one pass through the phases; 0 loops until Ctrl-C (default: 60)",
    )  # fmt: skip
    parser.add_argument(
        "--port", type=int, default=None,
        help=f"metrics port, refused if taken; 0 for a free one (default: {DEFAULT_PORT}, or a "
        f"free one if {DEFAULT_PORT} is taken)",
    )  # fmt: skip
    parser.add_argument("--addr", default="127.0.0.1", help="metrics address (default: 127.0.0.1)")
    parser.add_argument("--no-tui", action="store_true", help="plain status lines, no live view")


def main(args: argparse.Namespace) -> int:
    if args.duration < 0:
        raise SystemExit("poolwatch demo: --duration accepts seconds >= 0 (0 = until Ctrl-C)")
    if args.port is not None and not 0 <= args.port < 65536:
        raise SystemExit("poolwatch demo: --port accepts 0-65535 (0: a free port)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return run(
            args.db, duration=args.duration, port=args.port, addr=args.addr, tui=not args.no_tui
        )
    except DemoError as e:
        print(f"poolwatch demo: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:  # before the workload started; whatever was made is gone
        return 130
