"""The demo bot in-process: its shutdown delivers every fill, and its options are checked."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from otel_trading.tooling import demo
from otel_trading.tooling.cli import build_parser
from otel_trading.tooling.demo import DemoBot, OrderFilled, OrderPlaced, SimulatedVenue


def _args(**overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {"seed": 7, "tick_rate": 200.0, "force_open": None, "duration": 0.3}
    values.update(overrides)
    return argparse.Namespace(**values)


async def test_stopping_the_demo_delivers_the_fill_of_every_order_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    # Old design: orders still being routed when the bus stopped published their fills into a
    # stopped bus ("event bus 'main' is stopped", logged as a handler error): 2 of 5 demo runs.
    # Slow venues make sure orders are in flight (and queued) at the stop.
    async def slow_submit(self: SimulatedVenue, order: OrderPlaced, price: float) -> OrderFilled:
        await asyncio.sleep(0.02)
        return OrderFilled(order.order_id, self.name, price)

    monkeypatch.setattr(SimulatedVenue, "submit", slow_submit)
    bot = DemoBot(_args())
    placed: list[int] = []
    filled: list[int] = []
    bot.bus.subscribe(OrderPlaced, lambda o: placed.append(o.order_id))
    bot.bus.subscribe(OrderFilled, lambda f: filled.append(f.order_id))
    await asyncio.wait_for(bot.run(0.3), 30)
    assert len(placed) >= 3
    assert sorted(filled) == sorted(placed)
    assert bot.bus.dropped == 0


def test_force_open_takes_only_the_demos_breaker_names(capsys: pytest.CaptureFixture[str]) -> None:
    # Old design: a typo (venue_alpha) silently created a fourth breaker; --help listed no names.
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--force-open", "venue_alpha"])
    assert "invalid choice: 'venue_alpha' (choose from 'venue-alpha', 'venue-beta', 'venue-flaky')" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    assert "venue-alpha, venue-beta, venue-flaky" in capsys.readouterr().out.replace("\n                        ", " ")
    with pytest.raises(ValueError, match=r"force_open: no breaker named 'venue_alpha'; the demo's breakers are"):
        DemoBot(_args(force_open=["venue_alpha"]))
    bot = DemoBot(_args(force_open=["venue-beta"]))
    assert [n for n, b in bot.breakers.items() if b.state] == ["venue-beta"]


def test_metrics_off_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Old design: "exporting via none".
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    assert demo.run_demo(_args(port=None, addr=None, duration=0.05)) == 0
    out = capsys.readouterr().out
    assert "otel-trading demo: metrics off (OTEL_METRICS_EXPORTER=none)" in out
    assert "via none" not in out
