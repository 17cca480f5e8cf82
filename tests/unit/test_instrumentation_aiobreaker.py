"""aiobreaker under ``TradingInstrumentor``: what only aiobreaker does.

The contract every library keeps (async and sync calls, decorated coroutines, outcomes, uninstrument,
signatures, threads with a loop each, behaviour unchanged) is in ``test_instrumentation_contract.py``.
Here: a decorated function handed to ``call_async`` again, which aiobreaker runs once.
"""

from __future__ import annotations

import aiobreaker
import pytest

from ..conftest import Metrics, breaker_counts

pytestmark = pytest.mark.usefixtures("hot_path")


async def test_a_decorated_coroutine_passed_to_call_async_is_counted_once(instrumented: Metrics) -> None:
    breaker = aiobreaker.CircuitBreaker(name="binance")

    @breaker
    async def place_order() -> str:
        return "filled"

    # The decorator marks its wrapper ``_ignore_on_call``: call_async runs it as is, and the
    # wrapper's own call_async is the one guarded call.
    assert await breaker.call_async(place_order) == "filled"
    assert breaker.call(breaker(lambda: "sync")) == "sync"
    assert breaker_counts(instrumented, "binance") == (2, 0, 0)
