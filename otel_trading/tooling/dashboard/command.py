"""The ``otel-trading dashboard`` subcommand: print the dashboard, write it to a file, or check a file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from otel_trading.tooling.dashboard.generator import render_dashboard, write_dashboard

__all__ = ["add_subcommand"]


def _check(path: Path) -> int:
    expected = render_dashboard()
    try:
        actual = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        print(f"{path}: missing; run `otel-trading dashboard --out {path}`", file=sys.stderr)
        return 1
    if actual != expected:
        print(f"{path}: out of date; run `otel-trading dashboard --out {path}`", file=sys.stderr)
        return 1
    print(f"{path}: up to date")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.check is not None:
        return _check(Path(args.check))
    if args.out is not None:
        write_dashboard(args.out)
        print(f"wrote {args.out}")
        return 0
    sys.stdout.write(render_dashboard())
    return 0


def add_subcommand(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register ``dashboard`` on an argparse subparsers object; ``args.func(args)`` returns the exit code."""
    parser = subparsers.add_parser(
        "dashboard",
        help="generate the Grafana dashboard JSON from the metric contract",
        description=(
            "Generate the Grafana dashboard JSON from the metric contract: printed on stdout, written to "
            "--out FILE, or compared with FILE by --check FILE."
        ),
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--out",
        "--output",
        dest="out",
        default=None,
        metavar="FILE",
        help="write the JSON to FILE (parent directories created) instead of stdout",
    )
    target.add_argument(
        "--check",
        default=None,
        metavar="FILE",
        help="write nothing; exit 1 if FILE is missing or differs from the generated dashboard",
    )
    parser.set_defaults(func=_run)
    return parser
