"""What ``poolwatch top`` and ``poolwatch doctor`` share as commands: the arguments both take,
and the one line on stderr with exit status 2 when they cannot run."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_selector", "add_timeout", "fail"]


def add_selector(parser: argparse.ArgumentParser, when: str = "") -> None:
    """``--selector``; ``when`` says which other option it needs (``"with --prometheus: "``)."""
    parser.add_argument("--selector", help=f"{when}label matchers, e.g. '{{job=\"api\"}}'")


def add_timeout(parser: argparse.ArgumentParser, default: float, each: str) -> None:
    """``--timeout``: the seconds to wait for ``each`` read (a target, a query)."""
    parser.add_argument("--timeout", type=float, default=default,
                        help=f"seconds to wait for each {each} (default: {default:g})")  # fmt: skip


def fail(command: str, message: str) -> int:
    """Say why ``poolwatch <command>`` cannot go on, in one line, and give its exit status: 2."""
    print(f"poolwatch {command}: {message}", file=sys.stderr)
    return 2
