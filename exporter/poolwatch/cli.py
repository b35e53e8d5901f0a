"""The ``poolwatch`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from poolwatch.core.version import __version__

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="poolwatch", description="Connection pool metrics for SQLAlchemy applications."
    )
    parser.add_argument("--version", action="version", version=f"poolwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="run an instrumented workload that runs a pool dry, with a live view",
        description="Steady traffic, a burst that saturates the pool and times callers out, a "
        "leaked connection, slow queries, recovery; /metrics is served throughout.",
    )
    from poolwatch import demo as demo_module

    demo_module.add_arguments(demo)
    _add_top(sub)
    _add_doctor(sub)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo_module.main(args)
    if args.command in ("top", "doctor"):
        return int(args.run(args))
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2


def _add_top(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from poolwatch.tools import top

    parser = sub.add_parser(
        "top",
        help="a live view of every pool of one or many instances",
        description="One row per pool and instance, sorted by saturation, read from /metrics "
        "endpoints or from a Prometheus.",
    )
    top.add_arguments(parser)
    parser.set_defaults(run=top.main)


def _add_doctor(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from poolwatch.tools import doctor

    parser = sub.add_parser(
        "doctor",
        help="is the pool the problem, and what to change: findings and a size from history",
        description="Reads a window of history from Prometheus and prints, per pool, findings "
        "with their evidence and a pool_size/max_overflow from Little's law. Exit status: 0 "
        "healthy, 1 findings, 2 could not read the data.",
    )
    doctor.add_arguments(parser)
    parser.set_defaults(run=doctor.main)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
