"""pybreaker under ``TradingInstrumentor``: what only pybreaker does.

The contract every library keeps (outcomes, uninstrument, signatures, threads, behaviour unchanged)
is in ``test_instrumentation_contract.py``. Here: its ``calling()`` block, its mutable ``name``, its
unnamed breakers, its storage (a Redis outage), and its breakers dying inside a GC pass.
"""

from __future__ import annotations

import gc
import time
import weakref

import pybreaker
import pytest

from otel_trading.instrumentation import PybreakerInstrumentor, TradingInstrumentor
from otel_trading.metric_contract import METRICS_BY_KEY

from ..conftest import Metrics, breaker_counts, breaker_latency

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}

# Every test runs on the compiled hot paths and on their pure-Python twins.
pytestmark = pytest.mark.usefixtures("hot_path")


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom("venue down")


def test_a_calling_block_is_counted_and_timed_over_the_block(instrumented: Metrics) -> None:
    breaker = pybreaker.CircuitBreaker(name="binance")
    with breaker.calling():
        time.sleep(0.02)
    with pytest.raises(Boom), breaker.calling():
        raise Boom()
    assert breaker_counts(instrumented, "binance") == (1, 1, 0)
    count, total = breaker_latency(instrumented, "binance")
    assert count == 2 and total >= 0.02


def test_breaker_without_a_name_is_labelled_unnamed(instrumented: Metrics) -> None:
    breaker = pybreaker.CircuitBreaker()
    breaker.call(lambda: None)
    assert instrumented.value(N["breaker_successes"], name="unnamed") == 1


def test_renamed_breaker_reports_under_its_new_name(instrumented: Metrics) -> None:
    breaker = pybreaker.CircuitBreaker(name="old")
    breaker.call(lambda: None)
    breaker.name = "new"
    breaker.call(lambda: None)
    assert instrumented.value(N["breaker_successes"], name="old") == 1
    assert instrumented.value(N["breaker_successes"], name="new") == 1
    assert instrumented.value(N["breaker_state"], name="new") == 0
    assert instrumented.value(N["breaker_state"], name="old") is None


def test_breaker_listeners_and_storage_are_the_very_same_objects(instrumented: Metrics) -> None:
    listener = pybreaker.CircuitBreakerListener()
    breaker = pybreaker.CircuitBreaker(name="binance", listeners=[listener])
    storage = breaker._state_storage
    own_list = breaker._listeners
    breaker.call(lambda: None)
    for _ in range(5):
        with pytest.raises((Boom, pybreaker.CircuitBreakerError)):
            breaker.call(boom)
    assert breaker.listeners == (listener,)
    assert breaker._listeners is own_list and own_list == [listener]
    assert breaker._state_storage is storage
    assert breaker.fail_counter == 5 and breaker.current_state == "open"


class FlakyStorage(pybreaker.CircuitMemoryStorage):
    """Memory storage whose state read fails on demand (a Redis outage, say)."""

    broken = False

    @property
    def state(self) -> str:
        if self.broken:
            raise ConnectionError("storage unreachable")
        return super().state  # type: ignore[no-any-return]

    @state.setter
    def state(self, value: str) -> None:
        pybreaker.CircuitMemoryStorage.state.fset(self, value)  # type: ignore[attr-defined]


def test_state_read_failure_at_collection_keeps_the_last_state_and_the_other_metrics(
    instrumented: Metrics,
) -> None:
    storage = FlakyStorage(pybreaker.STATE_CLOSED)
    breaker = pybreaker.CircuitBreaker(name="redis", state_storage=storage)
    breaker.open()
    assert instrumented.value(N["breaker_state"], name="redis") == 1
    storage.broken = True
    try:
        assert instrumented.value(N["breaker_state"], name="redis") == 1
        assert instrumented.value(N["breaker_transitions"], name="redis", from_state="closed", to_state="open") == 1
    finally:
        # pybreaker breakers live in reference cycles: a later test's instrumentation would find
        # this one (existing instances are bound) and fail to read its state.
        storage.broken = False
        del breaker
        gc.collect()


def test_binding_of_a_collected_breaker_is_released_at_collection_not_inside_the_gc(
    instrumented: Metrics, instrumentor: TradingInstrumentor
) -> None:
    # pybreaker breakers live in reference cycles, so they die inside a GC pass, which may run
    # while a recording-layer lock is held: releasing the binding there could self-deadlock.
    breaker = pybreaker.CircuitBreaker(name="gone")
    breaker.call(lambda: None)
    session = PybreakerInstrumentor()._session  # the umbrella delegates pybreaker to it
    assert session is not None
    binding = weakref.ref(session.breakers.get(breaker))
    del breaker
    gc.collect()
    assert binding() is not None
    instrumented.collect()  # the state gauge finds the breaker gone and releases the binding
    assert binding() is None
    assert instrumented.value(N["breaker_state"], name="gone") is None
    assert instrumented.value(N["breaker_successes"], name="gone") == 1
