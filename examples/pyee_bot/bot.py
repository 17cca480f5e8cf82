"""A trading bot whose components talk over ``pyee`` event emitters, knowing nothing about OpenTelemetry.

An ``AsyncIOEventEmitter`` carries market data: every ``tick`` goes to the strategy (a sync
handler, which emits a ``fill``) and to the recorder (an async handler that pyee runs as a task;
it has a bug on tick 7). A plain ``EventEmitter`` carries ``order`` events to the risk checker.
pyee's own events (``new_listener``, ``error``) are used too: the bot logs every new handler and
every handler error. Run it as is, or auto-instrumented with no code change (see README.md)::

    OTEL_METRICS_EXPORTER=prometheus opentelemetry-instrument python bot.py

The scenario is deterministic: 20 ticks, 20 fills, 20 orders. The bot prints ``SUMMARY {json}``
with everything it observed, then ``READY`` and idles until stopped (``--once`` exits instead).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

from pyee import EventEmitter
from pyee.asyncio import AsyncIOEventEmitter

TICKS = 20
RECORD_S = 0.005  # the recorder's write to disk
RISK_S = 0.001  # the risk check
log = logging.getLogger("pyee_bot")


async def main(once: bool) -> None:
    market = AsyncIOEventEmitter()
    orders = EventEmitter()
    seen: dict[str, Any] = {"ticks": 0, "recorded": 0, "fills": 0, "orders": 0, "errors": [], "new_listeners": []}

    market.on("new_listener", lambda event, handler: seen["new_listeners"].append(event))
    market.on("error", lambda exc: seen["errors"].append(str(exc)))

    @market.on("tick")
    def strategy(tick: dict[str, Any]) -> None:
        seen["ticks"] += 1
        orders.emit("order", {"seq": tick["seq"], "qty": 1.0})
        market.emit("fill", {"seq": tick["seq"], "price": tick["price"]})

    @market.on("tick")
    async def recorder(tick: dict[str, Any]) -> None:
        await asyncio.sleep(RECORD_S)
        if tick["seq"] == 7:
            raise KeyError("bug in the recorder")
        seen["recorded"] += 1

    @market.on("fill")
    def on_fill(fill: dict[str, Any]) -> None:
        seen["fills"] += 1

    @orders.on("order")
    def risk_check(order: dict[str, Any]) -> None:
        time.sleep(RISK_S)
        seen["orders"] += 1

    for seq in range(TICKS):
        market.emit("tick", {"seq": seq, "price": 60_000.0 + seq})
        await asyncio.sleep(0)
    await market.wait_for_complete()
    await asyncio.sleep(0)  # the last task's done callbacks

    summary = {
        "seen": seen,
        "complete": market.complete,
        "listeners": {event: len(market.listeners(event)) for event in sorted(market.event_names())},
        "order_listeners": len(orders.listeners("order")),
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
