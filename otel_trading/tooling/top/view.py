"""How a frame looks: rich tables of breakers, event types and loops, coloured live or plain for scripts.

Every cell is a ``Text`` (a breaker named ``[red]`` stays a name, never markup). OPEN and HALF_OPEN
breakers and stalling loops stand out in colour; in plain mode (``--once``) nothing but the words
and numbers is written, one row per breaker, event type and loop. Values not known yet (a rate
before the second read) or undefined (a p99 with no observation in the interval) show as "—".
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from otel_trading.metric_contract import LOOP_LAG_BUCKETS
from otel_trading.tooling.top.model import STALL_SECONDS, STATE_WORDS, Frame

__all__ = ["DASH", "STATE_STYLES", "format_lag", "format_rate", "format_seconds", "render"]

DASH = "—"
STATE_STYLES: dict[int, str] = {0: "green", 1: "bold white on red", 2: "bold black on yellow"}


def format_rate(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def format_seconds(value: float | None) -> str:
    if value is None:
        return DASH
    if math.isinf(value):
        return "> 10 s"
    if value < 0.001:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def format_lag(value: float | None, bound: bool = False) -> str:
    """A lag estimated from buckets: below the first boundary there is no telling how far below;
    ``bound`` marks a bucket's upper bound (the worst observation was at most that)."""
    if value is None or math.isinf(value):
        return format_seconds(value)
    if value <= LOOP_LAG_BUCKETS[0]:
        return f"≤ {format_seconds(LOOP_LAG_BUCKETS[0])}"
    return f"≤ {format_seconds(value)}" if bound else format_seconds(value)


def _share(value: float | None) -> str:
    return DASH if value is None else f"{value:.1%}"


def _count(value: float | None) -> str:
    return DASH if value is None else f"{value:,.0f}"


def _table(title: str, columns: Sequence[tuple[str, str]], fleet: bool, plain: bool) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        title_style="" if plain else "bold",
        box=None if plain else box.SIMPLE_HEAD,
        header_style="" if plain else "bold cyan",
        show_edge=False,
        pad_edge=False,
        expand=False,
    )
    if fleet:
        table.add_column("INSTANCE", no_wrap=True)
    for name, justify in columns:
        table.add_column(name, justify="right" if justify == "r" else "left", no_wrap=True)
    return table


def _state(state: int | None, plain: bool) -> Text:
    word = STATE_WORDS.get(state, "UNKNOWN") if state is not None else "UNKNOWN"
    if plain:
        return Text(word)
    return Text(f" {word} ", style=STATE_STYLES.get(state, "") if state is not None else "")


def render(
    frame: Frame | None,
    *,
    source: str = "",
    plain: bool = False,
    status: str = "",
    refresh: float | None = None,
    now: float | None = None,
) -> RenderableType:
    """The whole screen for ``frame`` (None: nothing read yet), with ``status`` (an error, say) below
    the header. ``source``, ``refresh`` (seconds) and ``now`` (epoch seconds) only appear in the live
    header."""
    parts: list[RenderableType] = []
    if not plain:
        clock = time.strftime("%H:%M:%S", time.localtime(now if now is not None else time.time()))
        every = f" · every {refresh:g} s" if refresh else ""
        where = source or (frame.source if frame else "")
        header = Text.assemble(("otel-trading top", "bold"), f" · {where}{every} · {clock} · ", ("q", "bold"), " quits")
        parts.append(header)
    if status:
        parts.append(Text(status, style="" if plain else "bold red"))
    if frame is None:
        parts.append(Text("waiting for the first read ..."))
        return Group(*parts)
    if frame.empty:
        parts.append(
            Text(
                f"no otel-trading metrics at {frame.source} yet: no CircuitBreaker, EventBus or loop monitor "
                "reports there"
            )
        )
        return Group(*parts)
    if not frame.rates_ready:
        parts.append(Text(f"rates need two reads: {DASH} until the next one", style="" if plain else "dim"))
    fleet = frame.fleet
    breakers = _table(
        "Circuit breakers",
        [("BREAKER", "l"), ("STATE", "l"), ("CALLS/S", "r"), ("FAILURES", "r"), ("REJECTED/S", "r"), ("P99", "r")],
        fleet,
        plain,
    )
    for b in frame.breakers:
        cells = [
            Text(b.name),
            _state(b.state, plain),
            Text(format_rate(b.calls_per_s)),
            Text(_share(b.failure_share), style="red" if not plain and (b.failure_share or 0) > 0 else ""),
            Text(format_rate(b.rejected_per_s), style="yellow" if not plain and (b.rejected_per_s or 0) > 0 else ""),
            Text(format_seconds(b.p99_s)),
        ]
        breakers.add_row(*([Text(b.instance)] if fleet else []), *cells)
    events = _table(
        "Event types",
        [
            ("EVENT TYPE", "l"),
            ("PUBLISHED/S", "r"),
            ("PROCESSED/S", "r"),
            ("BACKLOG", "r"),
            ("P99", "r"),
            ("ERRORS/S", "r"),
        ],
        fleet,
        plain,
    )
    for e in frame.events:
        cells = [
            Text(e.event_type),
            Text(format_rate(e.published_per_s)),
            Text(format_rate(e.processed_per_s)),
            Text(_count(e.backlog), style="yellow" if not plain and (e.backlog or 0) > 100 else ""),
            Text(format_seconds(e.p99_s)),
            Text(format_rate(e.errors_per_s), style="red" if not plain and (e.errors_per_s or 0) > 0 else ""),
        ]
        events.add_row(*([Text(e.instance)] if fleet else []), *cells)
    loops = _table(
        "Event loop",
        [("LOOP", "l"), ("P99 LAG", "r"), ("WORST", "r"), (f"STALLS >{STALL_SECONDS * 1000:.0f}MS", "r")],
        fleet,
        plain,
    )
    for lp in frame.loops:
        stalling = not plain and (lp.new_stalls or 0) > 0
        late = not plain and (lp.p99_s or 0) > STALL_SECONDS
        cells = [
            Text(lp.loop),
            Text(format_lag(lp.p99_s), style="bold red" if late else ""),
            Text(format_lag(lp.worst_s, bound=True), style="bold red" if stalling else ""),
            Text(_count(lp.stalls), style="bold red" if stalling else ""),
        ]
        loops.add_row(*([Text(lp.instance)] if fleet else []), *cells)
    for table, rows in ((breakers, frame.breakers), (events, frame.events), (loops, frame.loops)):
        if rows:
            if parts:
                parts.append(Text(""))
            parts.append(table)
    return Group(*parts)
