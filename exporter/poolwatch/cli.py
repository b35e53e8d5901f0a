"""The ``poolwatch`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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
    _add_rules_command(sub)
    _add_dashboards_command(sub)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo_module.main(args)
    if args.command in ("top", "doctor"):
        return _piped(lambda: int(args.run(args)))
    if args.command in ("rules", "dashboards"):
        run: Callable[[argparse.Namespace], int] = args.run
        try:
            return run(args)
        except ValueError as e:  # a bad --job-selector or --datasource
            parser.error(str(e))
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


def _add_rules_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rules = sub.add_parser(
        "rules",
        help="write the Prometheus alerting and recording rules of this poolwatch version",
        description="The rules that match the installed poolwatch (docs/runbooks.md), for"
        " Prometheus' rule_files; check them with `promtool check rules`.",
    )
    rules.add_argument(
        "--job-selector",
        metavar="MATCHERS",
        help="label matchers added to every series the rules read, e.g. 'job=\"api\"' or"
        ' \'job=~"api|worker",env="prod"\' (default: every job)',
    )
    rules.add_argument(
        "-o", "--output", metavar="FILE", type=Path, help="write to FILE (default: stdout)"
    )
    rules.set_defaults(run=_write_rules)


def _write_rules(args: argparse.Namespace) -> int:
    from poolwatch.assets import rules

    text = rules(args.job_selector)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _add_dashboards_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dashboards = sub.add_parser(
        "dashboards",
        help="write the Grafana dashboards of this poolwatch version",
        description="The dashboards that match the installed poolwatch, as JSON files to"
        " import into Grafana or to provision from a directory.",
    )
    dashboards.add_argument(
        "--datasource",
        metavar="NAME",
        help="the Prometheus data source (name or uid) the dashboards select by default"
        " (default: Grafana's default Prometheus data source)",
    )
    dashboards.add_argument(
        "-o", "--output", metavar="DIR", type=Path, default=Path(),
        help="the directory to write them to (default: the current directory)",
    )  # fmt: skip
    dashboards.set_defaults(run=_write_dashboards)


def _write_dashboards(args: argparse.Namespace) -> int:
    from poolwatch.assets import dashboards

    files = dashboards(args.datasource)
    args.output.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.output / name).write_text(text, encoding="utf-8")
        print(f"wrote {args.output / name}", file=sys.stderr)
    return 0


def _piped(run: Callable[[], int]) -> int:
    """``poolwatch doctor | head``: a reader that stops early is not an error (the recipe of
    Python's signal documentation)."""
    try:
        code = run()
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
