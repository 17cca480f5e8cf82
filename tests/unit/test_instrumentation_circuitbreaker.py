"""circuitbreaker (fabfuel) under ``TradingInstrumentor``: what only circuitbreaker does.

The contract every library keeps (outcomes, uninstrument, signatures, threads, behaviour unchanged)
is in ``test_instrumentation_contract.py``. Here: its forms of ``expected_exception``, generator and
async-generator calls, a half-open state that is a reading of a timer, names taken from the
decorated function, rejections raised outside the decorators, the verdict of a bare ``with``
block, and a release that renames what the verdict reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from circuitbreaker import CircuitBreaker, CircuitBreakerError, CircuitBreakerMonitor, circuit

from otel_trading.instrumentation import TradingInstrumentor
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


class Rejected(Exception):
    """A business error: the venue answered."""


@pytest.fixture(autouse=True)
def _clean_monitor() -> Iterator[None]:
    # Every decorated breaker registers in this class-level dict for ever (the library's own test
    # suite resets it the same way); earlier tests' breakers would be bound by each instrument().
    CircuitBreakerMonitor.circuit_breakers = {}
    yield
    CircuitBreakerMonitor.circuit_breakers = {}


def expire(breaker: CircuitBreaker) -> None:
    """Let the recovery timeout pass without waiting (the library reads ``_opened`` + timeout)."""
    breaker._opened -= 10_000


def test_every_form_of_expected_exception_decides_what_is_a_failure(instrumented: Metrics) -> None:
    def only_timeouts(exc_type: type[BaseException], exc: BaseException) -> bool:
        return isinstance(exc, TimeoutError)

    class VenueBreaker(CircuitBreaker):
        EXPECTED_EXCEPTION = VenueDown
        FAILURE_THRESHOLD = 10

    @circuit(expected_exception=TimeoutError, name="type")
    def a(exc: Exception) -> None:
        raise exc

    @circuit(expected_exception=only_timeouts, name="predicate")
    def b(exc: Exception) -> None:
        raise exc

    @VenueBreaker(name="subclass")
    def c(exc: Exception) -> None:
        raise exc

    for fn in (a, b, c):
        for exc in (TimeoutError("t"), VenueDown("v"), Rejected("r")):
            with pytest.raises(type(exc)):
                fn(exc)
    # Any other error resets the breaker in the library: a success of the venue, as it counts it.
    assert counts(instrumented, "type") == counts(instrumented, "predicate") == (2, 1, 0)
    assert counts(instrumented, "subclass") == (2, 1, 0)
    assert latency(instrumented, "type")[0] == 3


def test_a_generator_call_is_timed_from_its_first_item_to_its_end(instrumented: Metrics) -> None:
    @circuit(name="feed")
    def ticks(dropped: bool) -> Iterator[int]:
        for tick in (1, 2):
            time.sleep(0.005)
            if dropped and tick == 2:
                raise VenueDown("feed dropped")
            yield tick

    feeds = [ticks(False), ticks(True)]
    time.sleep(0.1)  # made, not started: not yet a call
    assert list(feeds[0]) == [1, 2]
    with pytest.raises(VenueDown):
        list(feeds[1])
    assert counts(instrumented, "feed") == (1, 1, 0)
    count, total = latency(instrumented, "feed")
    assert count == 2 and 0.02 <= total < 0.1


def test_generator_stopped_early_counts_as_the_library_counts_it(instrumented: Metrics) -> None:
    @circuit(name="feed")
    def ticks() -> Iterator[int]:
        yield from range(10)

    gen = ticks()
    assert next(gen) == 0
    gen.close()  # GeneratorExit is no failure for the library: it resets the breaker
    assert counts(instrumented, "feed") == (1, 0, 0)


async def test_async_functions_and_async_generators_are_counted_and_timed(instrumented: Metrics) -> None:
    @circuit(failure_threshold=2, recovery_timeout=600, name="async")
    async def order(fail: bool) -> str:
        await asyncio.sleep(0.01)
        if fail:
            raise VenueDown("down")
        return "filled"

    @circuit(name="stream")
    async def book(fail: bool) -> AsyncIterator[int]:
        yield 1
        await asyncio.sleep(0.01)
        if fail:
            raise VenueDown("stream dropped")
        yield 2

    assert await order(False) == "filled"
    for _ in range(2):
        with pytest.raises(VenueDown):
            await order(True)
    with pytest.raises(CircuitBreakerError):
        await order(False)
    assert [x async for x in book(False)] == [1, 2]
    with pytest.raises(VenueDown):
        [x async for x in book(True)]
    assert counts(instrumented, "async") == (1, 2, 1)
    assert counts(instrumented, "stream") == (1, 1, 0)
    assert latency(instrumented, "async")[0] == 3 and latency(instrumented, "async")[1] >= 0.03
    assert latency(instrumented, "stream")[0] == 2 and latency(instrumented, "stream")[1] >= 0.02


def test_state_gauge_and_transitions_follow_the_library_states(instrumented: Metrics) -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=600, name="binance")

    @breaker
    def order(fail: bool) -> None:
        if fail:
            raise VenueDown("down")

    seen = [instrumented.value(N["breaker_state"], name="binance")]
    with pytest.raises(VenueDown):
        order(True)
    seen.append(instrumented.value(N["breaker_state"], name="binance"))
    expire(breaker)
    seen.append(instrumented.value(N["breaker_state"], name="binance"))  # the library's half_open
    with pytest.raises(VenueDown):
        order(True)  # the trial fails: open again
    expire(breaker)
    order(False)  # the trial succeeds: closed
    seen.append(instrumented.value(N["breaker_state"], name="binance"))
    assert seen == [0, 1, 2, 0]
    assert transitions(instrumented, "binance") == {
        ("closed", "open"): 1,
        ("open", "half_open"): 2,
        ("half_open", "open"): 1,
        ("half_open", "closed"): 1,
    }


def test_breaker_is_labelled_by_its_name_or_the_decorated_function(instrumented: Metrics) -> None:
    @circuit
    def fetch_ticker() -> int:
        return 1

    unnamed = CircuitBreaker()
    fetch_ticker()
    unnamed.call(lambda: None)
    qualname = fetch_ticker.__qualname__
    assert instrumented.value(N["breaker_successes"], name=qualname) == 1
    assert instrumented.value(N["breaker_successes"], name="unnamed") == 1
    assert CircuitBreakerMonitor.get(qualname) is not None


def test_rejection_raised_anywhere_is_counted_once(instrumented: Metrics) -> None:
    breaker = CircuitBreaker(name="manual")
    breaker.call(lambda: None)
    with pytest.raises(CircuitBreakerError):
        raise CircuitBreakerError(breaker)
    assert counts(instrumented, "manual") == (1, 0, 1)


def test_a_failure_counted_by_a_bare_with_block_is_not_taken_for_a_later_calls_error(instrumented: Metrics) -> None:
    breaker = CircuitBreaker(failure_threshold=100, expected_exception=ConnectionError, name="kraken")

    def rejected_order() -> None:
        raise ValueError("insufficient funds")  # not a failure for this breaker

    with pytest.raises(ConnectionError), breaker:  # the library counts it; not a call(): not exported
        raise ConnectionError("down")
    with pytest.raises(ValueError):
        breaker.call(rejected_order)
    assert counts(instrumented, "kraken")[:2] == (1, 0)


def test_a_release_that_renames_what_the_verdict_reads_leaves_circuitbreaker_out_with_one_warning(
    metrics: Metrics,
    instrumentor: TradingInstrumentor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What a release renaming ``_last_failure`` would install: the same exit, another attribute.
    def __exit__(self: Any, exc_type: Any, exc_value: Any, _traceback: Any) -> bool:
        if exc_type and self.is_failure(exc_type, exc_value):
            self._last_error = exc_value
            self._CircuitBreaker__call_failed()
        else:
            self.reset()
        return False

    monkeypatch.setattr(CircuitBreaker, "__exit__", __exit__)
    with caplog.at_level(logging.WARNING, logger="otel_trading.instrumentation"):
        instrumentor.instrument(meter_provider=metrics.provider, config={})

    @circuit(failure_threshold=5, name="kraken")
    def order() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        order()
    assert not any(owner is CircuitBreaker for owner, _ in instrumentor.patched)
    assert counts(metrics, "kraken") == (None, None, None)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "circuitbreaker 2.1" in warning and "is left out" in warning
    assert "CircuitBreaker.__exit__: names +_last_error, -_last_failure" in warning
