"""A small trading bot that knows nothing about OpenTelemetry.

pybreaker breakers guard two (simulated) venues, and the bot's own ``TinyBus`` carries ticks and
fills. Run it as is, or auto-instrumented with no code change (see README.md)::

    OTEL_METRICS_EXPORTER=prometheus opentelemetry-instrument python bot.py

The scenario is deterministic: 20 ticks; every tick sends one order to each venue; "binance" is
healthy, "kraken" is down (its breaker opens after 3 failures and then rejects); the recorder
handler has a bug on tick 7. The bot prints ``SUMMARY {json}`` with everything it observed, then
``READY`` and idles until stopped (``--once`` exits instead).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

import pybreaker
from tinybus import TinyBus

TICKS = 20


class VenueDown(ConnectionError):
    pass


class Venue:
    """A simulated exchange API."""

    def __init__(self, name: str, healthy: bool) -> None:
        self.name = name
        self.healthy = healthy

    def place_order(self, qty: float) -> dict[str, Any]:
        time.sleep(0.002)  # the round trip
        if not self.healthy:
            raise VenueDown(f"{self.name} is unreachable")
        return {"venue": self.name, "qty": qty, "status": "filled"}


class StateLog(pybreaker.CircuitBreakerListener):
    """The bot's own listener: it logs breaker state changes."""

    def __init__(self) -> None:
        self.changes: list[list[str | None]] = []

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self.changes.append([cb.name, old_state.name if old_state else None, new_state.name])


async def main(once: bool) -> None:
    state_log = StateLog()
    venues = {"binance": Venue("binance", healthy=True), "kraken": Venue("kraken", healthy=False)}
    breakers = {
        name: pybreaker.CircuitBreaker(fail_max=3, reset_timeout=600, name=name, listeners=[state_log])
        for name in venues
    }
    outcomes: dict[str, list[str]] = {name: [] for name in venues}
    seen = {"ticks": 0, "fills": 0}
    bus = TinyBus(name="market")

    def strategy(tick: dict[str, Any]) -> None:
        for name, venue in venues.items():
            try:
                fill = breakers[name].call(venue.place_order, 1.0)
            except pybreaker.CircuitBreakerError as exc:
                outcomes[name].append(f"CircuitBreakerError: {exc}")
            except VenueDown as exc:
                outcomes[name].append(f"VenueDown: {exc}")
            else:
                outcomes[name].append("filled")
                bus.publish("fill", fill)

    def recorder(tick: dict[str, Any]) -> None:
        seen["ticks"] += 1
        if tick["seq"] == 7:
            raise KeyError("bug in the recorder")

    def on_fill(fill: dict[str, Any]) -> None:
        seen["fills"] += 1

    bus.subscribe("tick", strategy)
    bus.subscribe("tick", recorder)
    bus.subscribe("fill", on_fill)
    runner = asyncio.create_task(bus.run())

    for seq in range(TICKS):
        bus.publish("tick", {"seq": seq, "price": 60_000.0 + seq})
        await asyncio.sleep(0)
    await bus.drain()

    summary = {
        "outcomes": outcomes,
        "states": {name: b.current_state for name, b in breakers.items()},
        "fail_counters": {name: b.fail_counter for name, b in breakers.items()},
        "listeners": {name: [type(x).__name__ for x in b.listeners] for name, b in breakers.items()},
        "state_changes": state_log.changes,
        "seen": seen,
        "bus_failures": bus.failures,
    }
    print("SUMMARY " + json.dumps(summary, sort_keys=True), flush=True)
    if once:
        runner.cancel()
        return
    print("READY", flush=True)
    await asyncio.Event().wait()  # a real bot keeps trading; this one idles until stopped


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="exit after the scenario instead of idling")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(parser.parse_args().once))
