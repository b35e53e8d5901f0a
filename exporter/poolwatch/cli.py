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
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo_module.main(args)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
