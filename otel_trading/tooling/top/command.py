"""The ``otel-trading top`` subcommand: its arguments, the live screen, and ``--once``.

Live, the screen (rich's alternate screen, as htop's) is redrawn every ``--interval`` seconds; ``q``
or Ctrl-C leaves it and restores the terminal. A source that cannot be read is reported on the
screen and read again at the next refresh. ``--once`` reads twice, ``--interval`` apart, so rates
are filled, prints one plain snapshot and exits: 0, or 1 with the reason on stderr when the source
cannot be read. rich is imported when the command runs, so the other subcommands start without it.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from typing import TYPE_CHECKING

from otel_trading.tooling.top.keys import KeyReader
from otel_trading.tooling.top.model import Frame
from otel_trading.tooling.top.sources import MetricsEndpoint, PrometheusFleet, Source, SourceError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["DEFAULT_URL", "add_subcommand", "run_live", "run_once", "run_top"]

DEFAULT_URL = "http://127.0.0.1:8000/metrics"
_QUIT_KEYS = frozenset({"q", "Q"})


def _http_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL, got {value!r}")
    return value


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {value!r}") from None
    if not 0 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"expected 0..3600 seconds, got {value!r}")
    return seconds


def _positive_seconds(value: str) -> float:
    seconds = _seconds(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected more than 0 seconds, got {value!r}")
    return seconds


def _poll(source: Source) -> tuple[Frame | None, str]:
    try:
        return source.poll(), ""
    except SourceError as exc:
        return None, str(exc)


def run_once(source: Source, interval: float, console: Console) -> int:
    """Read (twice when ``interval`` > 0, so rates are filled), print one plain snapshot."""
    from otel_trading.tooling.top.view import render

    frame, error = _poll(source)
    if frame is not None and interval > 0:
        time.sleep(interval)
        frame, error = _poll(source)
    if frame is None:
        print(f"otel-trading top: {error}", file=sys.stderr)
        return 1
    with console.capture() as captured:
        console.print(render(frame, plain=True))
    # No trailing blanks (rich pads every line to the table's width): lines a script can split.
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    sys.stdout.flush()
    return 0


def run_live(source: Source, interval: float, console: Console) -> int:
    """The live screen until ``q`` or Ctrl-C; an unreadable source is shown and read again."""
    from rich.live import Live

    from otel_trading.tooling.top.view import render

    frame: Frame | None = None
    try:
        with KeyReader() as keys, Live(console=console, screen=True, auto_refresh=False) as live:
            while True:
                started = time.monotonic()
                fresh, error = _poll(source)
                if fresh is not None:
                    frame = fresh
                status = f"{error} (retrying every {interval:g} s; q quits)" if error else ""
                live.update(render(frame, source=source.description, status=status, refresh=interval), refresh=True)
                deadline = started + interval
                while (left := deadline - time.monotonic()) > 0:
                    if keys.wait(left) in _QUIT_KEYS:
                        return 0
    except KeyboardInterrupt:
        return 0


def run_top(args: argparse.Namespace) -> int:
    from rich.console import Console

    source: Source
    if args.prometheus:
        source = PrometheusFleet(args.prometheus, window=args.rate_window, timeout=args.timeout)
    else:
        source = MetricsEndpoint(args.url or DEFAULT_URL, timeout=args.timeout)
    interval = args.interval if args.interval is not None else (2.0 if args.prometheus else 1.0)
    if args.once:
        # Plain text for scripts: no colour, and wide enough that no row wraps.
        width = max(Console().width, 200)
        return run_once(source, interval, Console(no_color=True, highlight=False, width=width, soft_wrap=False))
    if interval <= 0:
        raise ValueError("--interval must be more than 0 seconds for the live view (0 is for --once)")
    return run_live(source, interval, Console())


def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "top",
        help="live view of breakers, event types and event-loop lag (q quits)",
        description=(
            "A live terminal view of a bot's circuit breakers (state, calls/s, failure share, rejected/s, p99 "
            "latency), event types (published/s, processed/s, backlog, p99 processing time, errors/s) and "
            "event-loop lag, read from its /metrics (--url) or from Prometheus for a fleet (--prometheus). "
            "Press q or Ctrl-C to quit; --once prints one plain snapshot for scripts."
        ),
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", type=_http_url, default=None, help=f"a bot's metrics endpoint (default {DEFAULT_URL})")
    where.add_argument(
        "--prometheus",
        type=_http_url,
        default=None,
        metavar="URL",
        help="Prometheus' base URL (e.g. http://localhost:9090): every bot it scrapes, one row per instance",
    )
    parser.add_argument(
        "--interval",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="seconds between reads (default 1, 2 with --prometheus); with --once, between its two reads "
        "(0: one read, no rates)",
    )
    parser.add_argument("--once", action="store_true", help="print one plain-text snapshot and exit")
    parser.add_argument(
        "--rate-window",
        default="1m",
        metavar="DURATION",
        help="PromQL range for rates and p99s with --prometheus (default 1m)",
    )
    parser.add_argument(
        "--timeout", type=_positive_seconds, default=3.0, metavar="SECONDS", help="HTTP timeout (default 3)"
    )
    parser.set_defaults(func=run_top)
    return parser
