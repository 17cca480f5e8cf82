"""A trading bot guarded by ``purgatory`` breakers, knowing nothing about OpenTelemetry.

Async breakers guard two venues through purgatory's decorator: ``binance`` is healthy (an order
refused for insufficient funds is excluded from its failures), ``kraken`` is down, so its breaker
opens after 3 failures and then rejects with ``OpenedState``. A sync breaker guards the ``okx``
REST client as a context manager (``with rest_breakers.get_breaker("okx"):``): it times out once,
opens, rejects the next call, and closes again through a half-open trial once its TTL has
passed. Run it as is, or auto-instrumented with no code change (see README.md)::

    OTEL_METRICS_EXPORTER=prometheus opentelemetry-instrument python bot.py

The scenario is deterministic. The bot prints ``SUMMARY {json}`` with everything it observed,
then ``READY`` and idles until stopped (``--once`` exits instead).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

import purgatory
from purgatory.domain.model import OpenedState

TICKS = 20
ROUND_TRIP_S = 0.002
OKX_TTL_S = 0.2

breakers = purgatory.AsyncCircuitBreakerFactory(default_threshold=3, default_ttl=600)
rest_breakers = purgatory.SyncCircuitBreakerFactory(default_threshold=1, default_ttl=OKX_TTL_S)
hooks: list[list[Any]] = []


class VenueDown(ConnectionError):
    pass


class InsufficientFunds(Exception):
    """The venue answered: the order is refused. Not a reason to stop trading with it."""


@breakers("binance", exclude=[InsufficientFunds])
async def binance_order(seq: int) -> dict[str, Any]:
    await asyncio.sleep(ROUND_TRIP_S)
    if seq == 5:
        raise InsufficientFunds("binance: insufficient funds for order 5")
    return {"venue": "binance", "seq": seq, "status": "filled"}


@breakers("kraken")
async def kraken_order(seq: int) -> dict[str, Any]:
    await asyncio.sleep(ROUND_TRIP_S)
    raise VenueDown("kraken is unreachable")


def okx_balance(fail: bool) -> float:
    with rest_breakers.get_breaker("okx"):
        time.sleep(ROUND_TRIP_S)
        if fail:
            raise VenueDown("okx timed out")
        return 1_000.0


def on_breaker_event(name: str, kind: str, event: Any) -> None:
    """The bot's own purgatory hook: it logs state changes."""
    if kind == "state_changed":
        hooks.append([name, event.state])


async def main(once: bool) -> None:
    breakers.add_listener(on_breaker_event)
    rest_breakers.add_listener(on_breaker_event)
    outcomes: dict[str, list[str]] = {"binance": [], "kraken": [], "okx": []}
    for seq in range(TICKS):
        try:
            await binance_order(seq)
        except InsufficientFunds:
            outcomes["binance"].append("insufficient funds")
        else:
            outcomes["binance"].append("filled")
        try:
            await kraken_order(seq)
        except OpenedState:
            outcomes["kraken"].append("rejected")
        except VenueDown:
            outcomes["kraken"].append("down")
    # ok; a time-out opens the breaker; rejected at once; after the TTL a half-open trial closes it.
    for wait, fail in [(0.0, False), (0.0, True), (0.0, False), (OKX_TTL_S * 1.5, False), (0.0, False)]:
        time.sleep(wait)
        try:
            okx_balance(fail)
        except VenueDown:
            outcomes["okx"].append("down")
        except OpenedState:
            outcomes["okx"].append("rejected")
        else:
            outcomes["okx"].append("balance")
    states = {
        "binance": (await breakers.get_breaker("binance")).context.state,
        "kraken": (await breakers.get_breaker("kraken")).context.state,
        "okx": rest_breakers.get_breaker("okx").context.state,
    }
    summary = {"outcomes": outcomes, "states": states, "state_changes": hooks}
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
