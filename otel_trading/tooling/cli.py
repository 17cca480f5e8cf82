"""The ``otel-trading`` command: demo bot, live top view, doctor, dashboard generation, Grafana backup/restore."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from otel_trading.tooling import dashboard, demo, doctor, grafana_backup, metrics_reference, top
from otel_trading.version import __version__

__all__ = ["build_parser", "main"]

# Modules that contribute subcommands through ``add_subcommand(subparsers)``, in help order.
_SUBCOMMAND_MODULES = (demo, top, doctor, dashboard, grafana_backup, metrics_reference)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-trading", description=__doc__)
    parser.add_argument("--version", action="version", version=f"otel-trading {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in _SUBCOMMAND_MODULES:
        module.add_subcommand(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        # Configuration and start-up errors: one clear message, no traceback.
        print(f"otel-trading {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
