"""A trading bot guarded by the ``circuitbreaker`` package, knowing nothing about OpenTelemetry.

Three decorated functions: ``binance`` places orders (a ``def``; an order rejected for insufficient
funds is a business error its breaker excludes), ``kraken`` places orders (an ``async def``; the
venue is down, so its breaker opens after 3 failures and then rejects), and ``candles`` streams
market data (a generator function; its first two streams drop mid-way). Run it as is, or
auto-instrumented with no code change (see README.md)::

    OTEL_METRICS_EXPORTER=prometheus opentelemetry-instrument python bot.py

The scenario is deterministic: 20 ticks, one order per tick to each venue, 5 candle streams. The bot
prints ``SUMMARY {json}`` with everything it observed, then ``READY`` and idles until stopped
(``--once`` exits instead).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from circuitbreaker import CircuitBreakerError, CircuitBreakerMonitor, circuit

TICKS = 20
STREAMS = 5
ROUND_TRIP_S = 0.002


class VenueDown(ConnectionError):
    pass


class InsufficientFunds(Exception):
    """The venue answered: the order is refused. Not a reason to stop trading with it."""


@circuit(failure_threshold=3, recovery_timeout=600, expected_exception=VenueDown, name="binance")
def binance_order(seq: int) -> dict[str, Any]:
    time.sleep(ROUND_TRIP_S)
    if seq == 5:
        raise InsufficientFunds("binance: insufficient funds for order 5")
    return {"venue": "binance", "seq": seq, "status": "filled"}


@circuit(failure_threshold=3, recovery_timeout=600, expected_exception=VenueDown, name="kraken")
async def kraken_order(seq: int) -> dict[str, Any]:
    await asyncio.sleep(ROUND_TRIP_S)
    raise VenueDown("kraken is unreachable")


@circuit(failure_threshold=5, recovery_timeout=600, expected_exception=VenueDown, name="candles")
def candles(stream: int) -> Iterator[float]:
    for i in range(3):
        time.sleep(ROUND_TRIP_S)
        if stream < 2 and i == 1:
            raise VenueDown(f"candle stream {stream} dropped")
        yield 60_000.0 + i


async def main(once: bool) -> None:
    outcomes: dict[str, list[str]] = {"binance": [], "kraken": [], "candles": []}
    for seq in range(TICKS):
        try:
            binance_order(seq)
        except InsufficientFunds:
            outcomes["binance"].append("insufficient funds")
        else:
            outcomes["binance"].append("filled")
        try:
            await kraken_order(seq)
        except CircuitBreakerError:
            outcomes["kraken"].append("rejected")
        except VenueDown:
            outcomes["kraken"].append("down")
    for stream in range(STREAMS):
        try:
            outcomes["candles"].append(f"{len(list(candles(stream)))} candles")
        except VenueDown:
            outcomes["candles"].append("dropped")
    breakers = {b.name: b for b in CircuitBreakerMonitor.get_circuits()}
    summary = {
        "outcomes": outcomes,
        "states": {name: b.state for name, b in sorted(breakers.items())},
        "failure_counts": {name: b.failure_count for name, b in sorted(breakers.items())},
        "open": sorted(b.name for b in CircuitBreakerMonitor.get_open()),
    }
    print("SUMMARY " + json.dumps(summary, sort_keys=True), flush=True)
    if once:
        return
    print("READY", flush=True)
    await asyncio.Event().wait()  # a real bot keeps trading; this one idles until stopped


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="exit after the scenario instead of idling")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(parser.parse_args().once))
