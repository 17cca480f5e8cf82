"""Regeneration of this repository's generated files from the metric contract; ``--check`` fails on drift.

Two files are generated, never edited by hand:

* ``deploy/grafana/dashboards/trading_system.json``: the Grafana dashboard
  (``otel_trading.tooling.dashboard``);
* the Metrics Reference block of ``README.md``, between the ``metrics-reference`` markers
  (``otel_trading.tooling.metrics_reference``).

Run from anywhere, with otel-trading importable (e.g. ``.venv/bin/python tools/regenerate.py``)::

    python tools/regenerate.py           # rewrite whatever is stale
    python tools/regenerate.py --check   # write nothing; exit 1 and name each stale file

This is a repository-maintenance script: it is not part of the installed package.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from otel_trading.tooling.dashboard import render_dashboard
from otel_trading.tooling.metrics_reference import BEGIN, END, render_table

__all__ = ["DASHBOARD", "README", "REPO", "expected_readme", "main", "targets"]

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "trading_system.json"
README = REPO / "README.md"


def expected_readme(current: str) -> str:
    """``current`` with the Metrics Reference block (markers included) replaced by the generated one."""
    if BEGIN not in current or END not in current:
        raise ValueError(f"{README.name} lacks the metrics-reference markers {BEGIN!r} ... {END!r}")
    start = current.index(BEGIN)
    end = current.index(END) + len(END)
    # render_table() ends with a newline after END; the README keeps its own text after the block.
    return current[:start] + render_table().removesuffix("\n") + current[end:]


def targets() -> list[tuple[Path, Callable[[str | None], str]]]:
    """(file, function from its current text, or None if absent, to its expected text)."""

    def readme(current: str | None) -> str:
        if current is None:
            raise FileNotFoundError(README)
        return expected_readme(current)

    return [(DASHBOARD, lambda _current: render_dashboard()), (README, readme)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/regenerate.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is stale")
    args = parser.parse_args(argv)
    stale = 0
    for path, expected_from in targets():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        expected = expected_from(current)
        shown = path.relative_to(REPO)
        if current == expected:
            print(f"{shown}: up to date")
        elif args.check:
            print(f"{shown}: {'missing' if current is None else 'out of date'}; run `python tools/regenerate.py`",
                  file=sys.stderr)
            stale += 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(expected, encoding="utf-8")
            print(f"{shown}: regenerated")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
