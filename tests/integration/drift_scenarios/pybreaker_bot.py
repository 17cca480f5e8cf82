"""pybreaker drift scenario: successes, failures, an excluded error, rejections, a failed and a good half-open trial."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pybreaker

from tests.integration.drift_scenarios.venue import InsufficientFunds, down, funds, ok, recorder, ticks


def run() -> tuple[list[Any], list[object]]:
    """The bot's calls; returns what the bot saw, and the objects to keep alive until collection."""
    seen: list[Any] = []
    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=600, exclude=[InsufficientFunds], name="binance")
    stuck = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=600, name="bybit")

    record = recorder(seen, pybreaker.CircuitBreakerError)

    def attempt(func: Callable[[], Any], breaker: pybreaker.CircuitBreaker = breaker) -> None:
        record(lambda: breaker.call(func))

    # 4 successes (one a generator), an excluded error, 2 failures (the second trips), 2 rejected.
    for func in (ok, ok, ok, ticks, funds, down, down, ok, ok):
        attempt(func)
    breaker.reset_timeout = -60  # the open timeout has passed: each call while open is a half-open trial
    for func in (down, ok, ok):  # a failed trial (open again), a good one (closed), a success
        attempt(func)
    # bybit: its one failure opens it, and it stays open.
    attempt(down, stuck)
    attempt(ok, stuck)
    seen += [breaker.current_state, stuck.current_state]
    return seen, [breaker, stuck]
