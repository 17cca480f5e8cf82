"""CircuitBreaker behaviour: the state machine, exclusions, listeners, decorator and concurrency."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_trading import CircuitBreaker, CircuitOpenError, CircuitState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Boom(Exception):
    pass


def fail() -> None:
    raise Boom("venue down")


def ok() -> str:
    return "filled"


def breaker(**kwargs: object) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    params: dict[str, object] = {"name": "venue", "failure_threshold": 3, "recovery_timeout": 10.0}
    params.update(kwargs)
    return CircuitBreaker(**params, clock=clock, metrics_enabled=False), clock  # type: ignore[arg-type]


def trip(cb: CircuitBreaker) -> None:
    for _ in range(cb.failure_threshold):
        with pytest.raises(Boom):
            cb.call(fail)


def test_state_values_are_the_guides_gauge_values() -> None:
    assert [int(CircuitState.CLOSED), int(CircuitState.OPEN), int(CircuitState.HALF_OPEN)] == [0, 1, 2]


def test_new_breaker_is_closed_and_passes_results_through() -> None:
    cb, _ = breaker()
    assert cb.state is CircuitState.CLOSED
    assert cb.call(ok) == "filled"


def test_call_forwards_args_and_kwargs() -> None:
    cb, _ = breaker()
    assert cb.call(lambda a, b=0: a + b, 2, b=3) == 5


def test_opens_after_threshold_consecutive_failures() -> None:
    cb, _ = breaker()
    for _ in range(2):
        with pytest.raises(Boom):
            cb.call(fail)
    assert cb.state is CircuitState.CLOSED
    with pytest.raises(Boom):
        cb.call(fail)
    assert cb.state is CircuitState.OPEN


def test_success_resets_the_consecutive_failure_count() -> None:
    cb, _ = breaker()
    for _ in range(2):
        with pytest.raises(Boom):
            cb.call(fail)
    cb.call(ok)
    assert cb.failure_count == 0
    for _ in range(2):
        with pytest.raises(Boom):
            cb.call(fail)
    assert cb.state is CircuitState.CLOSED


def test_open_breaker_rejects_without_calling() -> None:
    cb, _ = breaker()
    trip(cb)
    called = []
    with pytest.raises(CircuitOpenError) as info:
        cb.call(lambda: called.append(1))
    assert called == []
    assert info.value.name == "venue"
    assert info.value.retry_after == pytest.approx(10.0)


def test_after_recovery_timeout_a_trial_call_is_let_through_and_success_closes() -> None:
    cb, clock = breaker()
    trip(cb)
    clock.now += 10.0
    assert cb.state is CircuitState.OPEN, "no call has tried the venue yet"
    assert cb.call(ok) == "filled"
    assert cb.state is CircuitState.CLOSED


def test_failed_trial_reopens_and_restarts_the_timeout() -> None:
    cb, clock = breaker()
    trip(cb)
    clock.now += 10.0
    with pytest.raises(Boom):
        cb.call(fail)
    assert cb.state is CircuitState.OPEN
    clock.now += 9.0
    with pytest.raises(CircuitOpenError):
        cb.call(ok)


def test_half_open_admits_at_most_half_open_max_calls_at_once() -> None:
    cb, clock = breaker(half_open_max_calls=1)
    trip(cb)
    clock.now += 10.0
    inner: list[BaseException] = []

    def nested() -> str:
        try:
            cb.call(ok)
        except CircuitOpenError as exc:
            inner.append(exc)
        return "trial"

    assert cb.call(nested) == "trial"
    assert len(inner) == 1 and inner[0].state is CircuitState.HALF_OPEN


def test_excluded_exception_types_propagate_without_counting() -> None:
    cb, _ = breaker(excluded_exceptions=[KeyError])
    for _ in range(5):
        with pytest.raises(KeyError):
            cb.call(lambda: {}["missing"])
    assert cb.state is CircuitState.CLOSED
    assert cb.failure_count == 0


def test_excluded_predicate_decides_per_exception() -> None:
    cb, _ = breaker(excluded_exceptions=[lambda e: "insufficient funds" in str(e)])

    def reject() -> None:
        raise Boom("insufficient funds")

    for _ in range(5):
        with pytest.raises(Boom):
            cb.call(reject)
    assert cb.state is CircuitState.CLOSED
    trip(cb)
    assert cb.state is CircuitState.OPEN


def test_listeners_see_every_transition_in_order() -> None:
    seen: list[tuple[str, CircuitState, CircuitState]] = []
    cb, clock = breaker(listeners=[lambda b, old, new: seen.append((b.name, old, new))])
    trip(cb)
    clock.now += 10.0
    cb.call(ok)
    assert seen == [
        ("venue", CircuitState.CLOSED, CircuitState.OPEN),
        ("venue", CircuitState.OPEN, CircuitState.HALF_OPEN),
        ("venue", CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]


def test_a_failing_listener_never_reaches_the_caller() -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("listener bug")

    cb, _ = breaker(listeners=[broken])
    trip(cb)
    assert cb.state is CircuitState.OPEN


def test_manual_open_and_close() -> None:
    cb, _ = breaker()
    cb.open()
    assert cb.state is CircuitState.OPEN
    cb.close()
    assert cb.state is CircuitState.CLOSED and cb.call(ok) == "filled"


def test_decorator_wraps_sync_functions() -> None:
    cb, _ = breaker()

    @cb
    def place(qty: int) -> int:
        return qty * 2

    assert place(21) == 42
    assert place.__name__ == "place"


async def test_decorator_wraps_async_functions() -> None:
    cb, _ = breaker()

    @cb
    async def place(qty: int) -> int:
        await asyncio.sleep(0)
        return qty * 2

    assert asyncio.iscoroutinefunction(place)
    assert await place(21) == 42


async def test_call_async_counts_failures_and_opens() -> None:
    cb, _ = breaker()

    async def down() -> None:
        raise Boom()

    for _ in range(3):
        with pytest.raises(Boom):
            await cb.call_async(down)
    assert cb.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        await cb.call_async(down)


async def test_cancellation_is_not_a_failure() -> None:
    cb, _ = breaker(failure_threshold=1)

    async def slow() -> None:
        await asyncio.sleep(10)

    task = asyncio.ensure_future(cb.call_async(slow))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cb.state is CircuitState.CLOSED and cb.failure_count == 0


async def test_call_of_an_async_function_is_a_type_error_not_a_success() -> None:
    # Old design: call() returned the unawaited coroutine and counted a success; with
    # failure_threshold=2, three failing calls left the breaker CLOSED.
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    cb = CircuitBreaker("venue", failure_threshold=2, meter_provider=provider)

    async def failing_order() -> None:
        raise Boom("venue down")

    for _ in range(3):
        with pytest.raises(TypeError, match=r"call_async.*@breaker"):
            cb.call(failing_order)
    with pytest.raises(TypeError, match="returned a coroutine"):
        cb.call(lambda: failing_order())  # a plain function handing back a coroutine: same mistake
    assert cb.state is CircuitState.CLOSED and cb.failure_count == 0
    data = reader.get_metrics_data()
    counted = {
        m.name: sum(p.value for p in m.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name in ("circuit_breaker.successes", "circuit_breaker.failures")
    }
    assert counted == {"circuit_breaker.successes": 0, "circuit_breaker.failures": 0}
    provider.shutdown()
    for _ in range(2):
        with pytest.raises(Boom):
            await cb.call_async(failing_order)
    assert cb.state is CircuitState.OPEN


async def test_call_async_of_a_plain_function_is_a_type_error_not_a_failure() -> None:
    cb, _ = breaker(failure_threshold=1)
    with pytest.raises(TypeError, match=r"call_async\(\) got ok.*returned str.*breaker\.call\(fn"):
        await cb.call_async(ok)  # type: ignore[arg-type]
    assert cb.state is CircuitState.CLOSED and cb.failure_count == 0
    future = asyncio.get_running_loop().create_future()
    future.set_result("filled")
    assert await cb.call_async(lambda: future) == "filled"  # any awaitable is fine


async def test_a_misused_trial_call_frees_its_half_open_slot() -> None:
    cb, clock = breaker()
    trip(cb)
    clock.now += 10.0

    async def coro() -> None:
        return None

    with pytest.raises(TypeError):
        cb.call(coro)
    assert cb.state is CircuitState.HALF_OPEN
    assert cb.call(ok) == "filled"  # the slot is free again: this trial runs and closes
    assert cb.state is CircuitState.CLOSED


def test_guarded_calls_run_concurrently_not_under_a_lock() -> None:
    cb = CircuitBreaker(name="parallel", metrics_enabled=False)
    inside = threading.Barrier(4, timeout=5)

    def meet() -> None:
        # Deadlocks (BrokenBarrierError after 5 s) if the breaker serialised calls.
        inside.wait()

    threads = [threading.Thread(target=cb.call, args=(meet,)) for _ in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not inside.broken
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [
        ({"name": ""}, ValueError, "name"),
        ({"name": 3}, TypeError, "name"),
        ({"name": "x", "failure_threshold": 0}, ValueError, "failure_threshold"),
        ({"name": "x", "failure_threshold": 2.5}, TypeError, "failure_threshold"),
        ({"name": "x", "recovery_timeout": -1}, ValueError, "recovery_timeout"),
        ({"name": "x", "recovery_timeout": "30"}, TypeError, "recovery_timeout"),
        ({"name": "x", "half_open_max_calls": 0}, ValueError, "half_open_max_calls"),
        ({"name": "x", "sample_rate": 1.5}, ValueError, "sample_rate"),
        ({"name": "x", "excluded_exceptions": ["nope"]}, TypeError, "excluded_exceptions"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], exc: type[Exception], needle: str) -> None:
    with pytest.raises(exc, match=needle):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
