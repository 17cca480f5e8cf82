"""circuitbreaker drift scenario: sync, generator, async and async-generator calls; failures, rejections, trials."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import circuitbreaker

from tests.integration.drift_scenarios.venue import VenueDown, recorder
from tests.integration.drift_scenarios.venue import order as venue_order


def run() -> tuple[list[Any], list[object]]:
    """The bot's calls; returns what the bot saw, and the objects to keep alive until collection."""
    seen: list[Any] = []
    orders = circuitbreaker.CircuitBreaker(
        failure_threshold=2, recovery_timeout=600, expected_exception=VenueDown, name="kraken"
    )
    stream = circuitbreaker.CircuitBreaker(failure_threshold=5, recovery_timeout=600, name="stream")
    stuck = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=600, name="bybit")

    order = orders(venue_order)

    @stream
    def candles() -> Iterator[int]:
        yield 1
        yield 2

    @stream
    async def quote(fail: bool) -> int:
        if fail:
            raise VenueDown("venue down")
        return 1

    @stream
    async def book() -> AsyncIterator[int]:
        yield 1
        yield 2

    @stuck
    def withdraw() -> int:
        raise VenueDown("venue down")

    attempt = recorder(seen, circuitbreaker.CircuitBreakerError)

    def expire() -> None:
        orders._opened -= 10_000  # the recovery timeout has passed: the next call is a half-open trial

    # kraken: 4 successes (one an error it does not expect), 2 failures (the second opens it), 2 rejected.
    for kind in ("ok", "ok", "ok", "funds", "down", "down", "ok", "ok"):
        attempt(partial(order, kind))
    expire()
    attempt(lambda: order("down"))  # a failed trial: open again
    expire()
    attempt(lambda: order("ok"))  # a good trial: closed
    attempt(lambda: order("ok"))

    # stream: a generator, an async success and failure, an async generator.
    async def collect() -> int:
        return sum([x async for x in book()])

    attempt(lambda: sum(candles()))
    attempt(lambda: asyncio.run(quote(False)))
    attempt(lambda: asyncio.run(quote(True)))
    attempt(lambda: asyncio.run(collect()))
    # bybit: its one failure opens it, and it stays open.
    attempt(withdraw)
    attempt(withdraw)
    seen += [orders.state, stream.state, stuck.state]
    return seen, [orders, stream, stuck, order, candles, quote, book, withdraw]
