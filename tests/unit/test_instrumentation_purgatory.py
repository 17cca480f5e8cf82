"""purgatory under ``TradingInstrumentor``: what only purgatory does.

The contract every library keeps (sync and async decorators and blocks, exclusions by type and by
predicate, outcomes, uninstrument, signatures, threads, behaviour unchanged) is in
``test_instrumentation_contract.py``. Here: a half-open state that lives inside its trial block, one
wrapper object in nested blocks, concurrent blocks of one circuit on one event loop, and
cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import purgatory
import pytest

from otel_trading.metric_contract import METRICS_BY_KEY

from ..conftest import Metrics
from ..conftest import breaker_counts as counts
from ..conftest import breaker_latency as latency
from ..conftest import breaker_transitions as transitions

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}

# Every test runs on the compiled hot paths and on their pure-Python twins.
pytestmark = pytest.mark.usefixtures("hot_path")


class VenueDown(ConnectionError):
    pass


def expire(factory: Any, name: str) -> None:
    """Let the TTL pass without waiting: purgatory compares ``opened_at + ttl`` with ``time.time()``."""
    context = factory.uow.contexts.breakers.get(name)  # the in-memory repository's own table
    if context is not None and context._state.opened_at is not None:
        context._state.opened_at -= 10_000


def test_the_half_open_state_is_reported_inside_its_trial_block(instrumented: Metrics) -> None:
    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=1, default_ttl=600)
    seen = []

    @factory("binance")
    def order(fail: bool) -> None:
        seen.append(instrumented.value(N["breaker_state"], name="binance"))  # inside the block
        if fail:
            raise VenueDown("down")

    order(False)
    with pytest.raises(VenueDown):
        order(True)
    seen.append(instrumented.value(N["breaker_state"], name="binance"))
    expire(factory, "binance")
    with pytest.raises(VenueDown):
        order(True)  # the half-open trial fails
    expire(factory, "binance")
    order(False)  # the trial succeeds
    seen.append(instrumented.value(N["breaker_state"], name="binance"))
    assert seen == [0, 0, 1, 2, 2, 0]
    assert transitions(instrumented, "binance") == {
        ("closed", "open"): 1,
        ("open", "half_open"): 2,
        ("half_open", "open"): 1,
        ("half_open", "closed"): 1,
    }
    assert counts(instrumented, "binance") == (2, 2, 0)


def test_one_wrapper_object_in_nested_and_exit_stack_blocks(instrumented: Metrics) -> None:
    factory = purgatory.SyncCircuitBreakerFactory()
    breaker = factory.get_breaker("reused")
    with breaker:
        with breaker:
            time.sleep(0.01)
        time.sleep(0.01)
    with contextlib.ExitStack() as stack:
        stack.enter_context(breaker)
        time.sleep(0.01)
    assert counts(instrumented, "reused") == (3, 0, 0)
    count, total = latency(instrumented, "reused")
    assert count == 3 and total >= 0.04


async def test_concurrent_blocks_of_one_circuit_on_one_loop_are_each_timed(instrumented: Metrics) -> None:
    factory = purgatory.AsyncCircuitBreakerFactory()

    @factory("async")
    async def order() -> str:
        await asyncio.sleep(0.02)
        return "filled"

    assert list(await asyncio.gather(order(), order(), order())) == ["filled"] * 3
    assert counts(instrumented, "async") == (3, 0, 0)
    count, total = latency(instrumented, "async")
    assert count == 3 and total >= 0.06  # three concurrent calls each took their 20 ms


async def test_cancellation_is_a_failure_as_purgatory_counts_it(instrumented: Metrics) -> None:
    factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=5)

    @factory("slow")
    async def order() -> None:
        await asyncio.sleep(10)

    task = asyncio.ensure_future(order())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert counts(instrumented, "slow") == (0, 1, 0)
    assert (await factory.get_breaker("slow")).context.failure_count == 1
