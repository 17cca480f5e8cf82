"""The ``otel-trading`` command: demo bot, doctor, dashboard generation, Grafana backup/restore."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from otel_trading.version import __version__

# Modules that contribute subcommands through ``add_subcommand(subparsers)``.
_SUBCOMMAND_MODULES = (
    "otel_trading.demo",
    "otel_trading.doctor",
    "otel_trading.dashboard",
    "otel_trading.grafana_backup",
    "otel_trading.metrics_reference",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-trading", description=__doc__)
    parser.add_argument("--version", action="version", version=f"otel-trading {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
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
