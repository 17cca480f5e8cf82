"""aiobreaker drift scenario: sync, generator and async calls; failures, an excluded error, rejections, trials."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import aiobreaker

from tests.integration.drift_scenarios.venue import (
    InsufficientFunds,
    down,
    down_async,
    funds,
    ok,
    ok_async,
    recorder,
    ticks,
)


def run() -> tuple[list[Any], list[object]]:
    """The bot's calls; returns what the bot saw, and the objects to keep alive until collection."""
    seen: list[Any] = []
    breaker = aiobreaker.CircuitBreaker(
        fail_max=2, timeout_duration=timedelta(seconds=600), exclude=[InsufficientFunds], name="kraken"
    )

    stuck = aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=600), name="bybit")

    outcome = recorder(seen, aiobreaker.CircuitBreakerError)

    def sync(func: Callable[[], Any], breaker: aiobreaker.CircuitBreaker = breaker) -> Callable[[], Any]:
        return lambda: breaker.call(func)

    def in_loop(func: Callable[[], Any], breaker: aiobreaker.CircuitBreaker = breaker) -> Callable[[], Any]:
        return lambda: asyncio.run(breaker.call_async(func))

    # 5 successes (a generator, an async call), an excluded error, 2 failures (the second trips), 2 rejected.
    for attempt in (sync(ok), sync(ok), sync(ticks), sync(funds), in_loop(ok_async)):
        outcome(attempt)
    for attempt in (in_loop(down_async), sync(down), sync(ok), in_loop(ok_async)):
        outcome(attempt)
    breaker.timeout_duration = timedelta(seconds=-60)  # each call while open is a half-open trial
    for attempt in (in_loop(down_async), sync(ok), in_loop(ok_async)):  # a failed trial, a good one, a success
        outcome(attempt)
    # bybit: its one failure opens it, and it stays open.
    outcome(in_loop(down_async, stuck))
    outcome(sync(ok, stuck))
    states = aiobreaker.CircuitBreakerState
    seen += [breaker.current_state == states.CLOSED, stuck.current_state == states.OPEN]
    return seen, [breaker, stuck]
