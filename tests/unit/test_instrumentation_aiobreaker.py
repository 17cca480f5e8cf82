"""aiobreaker under ``TradingInstrumentor``: async calls counted and timed, behaviour unchanged."""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiobreaker
import aiobreaker.state
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_trading.instrumentation import TradingInstrumentor
from otel_trading.metric_contract import METRICS_BY_KEY

from ..conftest import Metrics, make_metrics

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}
CLASSES = [
    aiobreaker.CircuitBreaker,
    aiobreaker.state.CircuitBreakerBaseState,
    aiobreaker.state.CircuitClosedState,
    aiobreaker.state.CircuitOpenState,
    aiobreaker.state.CircuitHalfOpenState,
]


class Boom(Exception):
    pass


async def ok() -> str:
    await asyncio.sleep(0)
    return "filled"


async def slow() -> None:
    await asyncio.sleep(0.02)


async def boom() -> None:
    raise Boom("venue down")


async def test_async_successes_and_failures_are_counted_per_name(instrumented: Metrics) -> None:
    breaker = aiobreaker.CircuitBreaker(fail_max=5, name="binance")
    for _ in range(3):
        assert await breaker.call_async(ok) == "filled"
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call_async(boom)
    assert instrumented.value(N["breaker_successes"], name="binance") == 3
    assert instrumented.value(N["breaker_failures"], name="binance") == 2


async def test_async_latency_covers_the_awaited_call(instrumented: Metrics) -> None:
    breaker = aiobreaker.CircuitBreaker(name="binance")
    await breaker.call_async(slow)
    point = instrumented.histogram(N["breaker_latency"], name="binance")
    assert point is not None and point.count == 1 and 0.02 <= point.sum < 1.0


async def test_open_breaker_rejections_state_and_transition_are_reported(instrumented: Metrics) -> None:
    breaker = aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(minutes=10), name="kraken")
    with pytest.raises(aiobreaker.CircuitBreakerError):
        await breaker.call_async(boom)
    for _ in range(3):
        with pytest.raises(aiobreaker.CircuitBreakerError):
            await breaker.call_async(ok)
    assert instrumented.value(N["breaker_rejected"], name="kraken") == 3
    assert instrumented.value(N["breaker_state"], name="kraken") == 1
    assert instrumented.value(N["breaker_transitions"], name="kraken", from_state="closed", to_state="open") == 1


async def test_decorated_coroutine_is_counted_once(instrumented: Metrics) -> None:
    breaker = aiobreaker.CircuitBreaker(name="binance")

    @breaker
    async def place_order() -> str:
        return "filled"

    assert await place_order() == "filled"
    assert instrumented.value(N["breaker_successes"], name="binance") == 1


def test_sync_call_is_counted(instrumented: Metrics) -> None:
    breaker = aiobreaker.CircuitBreaker(name="binance")
    assert breaker.call(lambda: 42) == 42
    assert instrumented.value(N["breaker_successes"], name="binance") == 1


def test_uninstrument_restores_every_aiobreaker_class_attribute_exactly(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    before = {cls: dict(vars(cls)) for cls in CLASSES}
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert any(vars(cls).get(k) is not v for cls in CLASSES for k, v in before[cls].items())
    instrumentor.uninstrument()
    for cls in CLASSES:
        assert vars(cls).keys() == before[cls].keys(), cls
        assert all(vars(cls)[k] is v for k, v in before[cls].items()), cls


def test_call_async_is_still_a_coroutine_function(metrics: Metrics, instrumentor: TradingInstrumentor) -> None:
    def describe() -> tuple[Any, ...]:
        method = aiobreaker.state.CircuitBreakerBaseState.call_async
        return (
            inspect.iscoroutinefunction(method),
            inspect.iscoroutinefunction(aiobreaker.CircuitBreaker(name="x").call_async),
            str(inspect.signature(method)),
            method.__name__,
        )

    plain = describe()
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert describe() == plain


class Recorder(aiobreaker.CircuitBreakerListener):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def before_call(self, breaker: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        self.events.append(("before_call",))

    def success(self, breaker: Any) -> None:
        self.events.append(("success",))

    def failure(self, breaker: Any, exception: Exception) -> None:
        self.events.append(("failure", type(exception).__name__))

    def state_change(self, breaker: Any, old: Any, new: Any) -> None:
        self.events.append(("state_change", old.state.name if old else None, new.state.name))


OPS: dict[str, Callable[[aiobreaker.CircuitBreaker], Awaitable[Any]]] = {
    "ok": lambda b: b.call_async(ok),
    "fail": lambda b: b.call_async(boom),
}


async def run_ops(ops: list[str], fail_max: int, timeout: timedelta, name: str) -> tuple[list[Any], Recorder, Any]:
    recorder = Recorder()
    b = aiobreaker.CircuitBreaker(fail_max=fail_max, timeout_duration=timeout, listeners=[recorder], name=name)
    trace: list[Any] = []
    for op in ops:
        start = len(recorder.events)
        try:
            outcome: tuple[Any, ...] = ("returned", await OPS[op](b))
        except BaseException as exc:
            # CircuitBreakerError's str() holds a timestamp; its message is the stable part.
            outcome = ("raised", type(exc).__name__, getattr(exc, "message", str(exc)))
        trace.append((op, outcome, b.current_state.name, b.fail_counter, sorted(vars(b)), recorder.events[start:]))
    return trace, recorder, b


_example = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(st.sampled_from(sorted(OPS)), max_size=15),
    fail_max=st.integers(1, 3),
    timeout=st.sampled_from([timedelta(0), timedelta(hours=1)]),
)
def test_aiobreaker_behaves_identically_and_counts_match_its_callbacks(
    ops: list[str], fail_max: int, timeout: timedelta
) -> None:
    name = f"prop-{next(_example)}"
    plain, _, _ = asyncio.run(run_ops(ops, fail_max, timeout, "plain"))
    metrics = make_metrics(with_views=False)
    inst = TradingInstrumentor()
    inst.instrument(meter_provider=metrics.provider, config={})
    try:
        traced, recorder, breaker = asyncio.run(run_ops(ops, fail_max, timeout, name))
        successes = metrics.value(N["breaker_successes"], name=name)
        failures = metrics.value(N["breaker_failures"], name=name)
        rejected = metrics.value(N["breaker_rejected"], name=name)
    finally:
        inst.uninstrument()
        metrics.provider.shutdown()
    assert traced == plain
    assert successes == recorder.events.count(("success",))
    assert failures == sum(1 for e in recorder.events if e[0] == "failure")
    assert rejected == sum(1 for _, outcome, *_, events in traced if outcome[1] == "CircuitBreakerError" and not events)
    assert breaker.name == name
