"""purgatory drift scenario: decorator, context-manager and async breakers; failures, rejections, half-open trials."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import purgatory
from purgatory.domain.model import OpenedState

from tests.integration.drift_scenarios.venue import InsufficientFunds, VenueDown, recorder
from tests.integration.drift_scenarios.venue import order as venue_order


def run() -> tuple[list[Any], list[object]]:
    """The bot's calls; returns what the bot saw, and the objects to keep alive until collection."""
    seen: list[Any] = []
    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=2, default_ttl=600, exclude=[InsufficientFunds])

    order = factory("kraken")(venue_order)

    @factory("bybit", threshold=1)
    def withdraw() -> int:
        raise VenueDown("venue down")

    attempt = recorder(seen, OpenedState)

    # kraken: 4 successes (one an excluded error), 2 failures (the second opens it), 2 rejected.
    for kind in ("ok", "ok", "ok", "funds", "down", "down", "ok", "ok"):
        attempt(partial(order, kind))
    factory.get_breaker("kraken").context.ttl = -1  # the open time has passed: each call is a half-open trial
    for kind in ("down", "ok", "ok"):  # a failed trial (open again), a good one (closed), a success
        attempt(partial(order, kind))

    # bybit: its one failure opens it, and it stays open.
    for _ in range(2):
        attempt(lambda: withdraw())

    # binance: two blocks of a context manager.
    for _ in range(2):
        with factory.get_breaker("binance"):
            seen.append(2)

    # okx: async blocks, a success and a failure.
    async def venue() -> None:
        breakers = purgatory.AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=600)
        async with await breakers.get_breaker("okx"):
            seen.append(3)
        try:
            async with await breakers.get_breaker("okx"):
                raise VenueDown("venue down")
        except VenueDown:
            seen.append("down")

    asyncio.run(venue())
    seen += [factory.get_breaker("kraken").context.state, factory.get_breaker("bybit").context.state]
    return seen, [factory, order, withdraw]
