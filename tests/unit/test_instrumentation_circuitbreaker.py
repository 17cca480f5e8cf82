"""circuitbreaker (fabfuel) under ``TradingInstrumentor``: all six breaker metrics, and that it cannot tell.

Metric tests run on every histogram path (``metrics`` fixture). Invisibility is checked by running
the same sequence of decorated calls with and without the instrumentor and comparing everything
the bot can observe (return values, exceptions, state, counters, the monitor), with the expected
metrics derived from circuitbreaker's own observables only.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import itertools
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import circuitbreaker
import pytest
from circuitbreaker import CircuitBreaker, CircuitBreakerError, CircuitBreakerMonitor, circuit
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from otel_trading.instrumentation import CircuitbreakerInstrumentor, TradingInstrumentor
from otel_trading.instrumentation._core.binding import BreakerBinding
from otel_trading.metric_contract import METRICS_BY_KEY

from ..conftest import Metrics, assert_uninstrument_restores_classes, make_metrics, run_in_threads
from ..conftest import breaker_counts as counts
from ..conftest import breaker_latency as latency
from ..conftest import breaker_transitions as transitions

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}
CLASSES = [CircuitBreaker, CircuitBreakerError, CircuitBreakerMonitor]

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


# -- the six metrics ---------------------------------------------------------------------------------


def test_decorated_function_successes_failures_and_rejections_are_exact(instrumented: Metrics) -> None:
    calls = 0

    @circuit(failure_threshold=3, recovery_timeout=600, name="kraken")
    def place_order(fail: bool) -> str:
        nonlocal calls
        calls += 1
        if fail:
            raise VenueDown("kraken unreachable")
        return "filled"

    assert [place_order(False) for _ in range(4)] == ["filled"] * 4
    for _ in range(3):
        with pytest.raises(VenueDown):
            place_order(True)
    for _ in range(5):  # raised by the decorator's wrapper before call() runs
        with pytest.raises(CircuitBreakerError):
            place_order(False)
    assert calls == 7
    assert counts(instrumented, "kraken") == (4, 3, 5)
    assert latency(instrumented, "kraken")[0] == 7
    assert instrumented.value(N["breaker_state"], name="kraken") == 1
    assert transitions(instrumented, "kraken") == {("closed", "open"): 1}


def test_latency_sum_covers_the_guarded_calls(instrumented: Metrics) -> None:
    @circuit(name="binance")
    def slow() -> None:
        time.sleep(0.02)

    started = time.perf_counter()
    for _ in range(3):
        slow()
    took = time.perf_counter() - started
    count, total = latency(instrumented, "binance")
    assert count == 3
    assert 0.06 <= total <= took


def test_expected_exception_excludes_business_errors_from_failures(instrumented: Metrics) -> None:
    @circuit(failure_threshold=2, expected_exception=VenueDown, name="binance")
    def order(exc: type[Exception] | None) -> None:
        if exc is not None:
            raise exc("no")

    for _ in range(3):
        with pytest.raises(Rejected):
            order(Rejected)
    with pytest.raises(VenueDown):
        order(VenueDown)
    # The library resets the breaker on an excluded error: a success of the venue, as it counts it.
    assert counts(instrumented, "binance") == (3, 1, 0)
    assert latency(instrumented, "binance")[0] == 4
    assert instrumented.value(N["breaker_state"], name="binance") == 0


def test_expected_exception_predicate_and_subclass_attribute_are_respected(instrumented: Metrics) -> None:
    def only_timeouts(exc_type: type[BaseException], exc: BaseException) -> bool:
        return isinstance(exc, TimeoutError)

    class VenueBreaker(CircuitBreaker):
        EXPECTED_EXCEPTION = VenueDown
        FAILURE_THRESHOLD = 10

    @circuit(expected_exception=only_timeouts, name="predicate")
    def a(exc: Exception) -> None:
        raise exc

    @VenueBreaker(name="subclass")
    def b(exc: Exception) -> None:
        raise exc

    for fn in (a, b):
        for exc in (TimeoutError("t"), VenueDown("v"), Rejected("r")):
            with pytest.raises(type(exc)):
                fn(exc)
    assert counts(instrumented, "predicate") == (2, 1, 0)
    assert counts(instrumented, "subclass") == (2, 1, 0)


def test_failing_generator_calls_are_failures_timed_over_their_iteration(instrumented: Metrics) -> None:
    @circuit(failure_threshold=10, name="feed")
    def ticks(fail: bool) -> Iterator[int]:
        yield 1
        time.sleep(0.01)
        if fail:
            raise VenueDown("feed dropped")
        yield 2

    for _ in range(3):
        with pytest.raises(VenueDown):
            list(ticks(True))
    assert list(ticks(False)) == [1, 2]
    assert counts(instrumented, "feed") == (1, 3, 0)
    count, total = latency(instrumented, "feed")
    assert count == 4 and total >= 0.04


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


def test_breakers_decorated_before_instrumentation_are_found_with_their_rejections(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    @circuit(failure_threshold=1, recovery_timeout=600, name="early")
    def order() -> None:
        raise VenueDown("down")

    with pytest.raises(VenueDown):
        order()  # opens it, before instrumentation
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert metrics.value(N["breaker_state"], name="early") == 1
    with pytest.raises(CircuitBreakerError):
        order()
    assert counts(metrics, "early") == (0, 0, 1)
    assert list(CircuitBreakerMonitor.get_open()) == [CircuitBreakerMonitor.get("early")]


def test_concurrent_calls_from_threads_are_counted_exactly(instrumented: Metrics) -> None:
    @circuit(name="binance")
    def order() -> None:
        return None

    def worker() -> None:
        for _ in range(500):
            order()

    run_in_threads(8, worker)
    assert counts(instrumented, "binance") == (4000, 0, 0)
    assert latency(instrumented, "binance")[0] == 4000


def test_mixed_outcomes_from_threads_on_one_breaker_are_counted_exactly(instrumented: Metrics) -> None:
    # A thread switch after nearly every bytecode: between circuitbreaker's ``_last_failure = exc``
    # and its failure count, other threads' successes clear that shared attribute and their
    # failures overwrite it; the outcome must come from what the calling thread itself raised.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    @circuit(failure_threshold=10**9, name="kraken")
    def order(fail: bool) -> None:
        if fail:
            raise ConnectionError("down")

    def worker() -> None:
        for i in range(1_500):
            with contextlib.suppress(ConnectionError):
                order(i % 2 == 1)

    try:
        for _ in range(4):
            run_in_threads(8, worker)
    finally:
        sys.setswitchinterval(previous)
    assert counts(instrumented, "kraken") == (24_000, 24_000, 0)


def test_a_failure_counted_by_a_bare_with_block_is_not_taken_for_a_later_calls_error(instrumented: Metrics) -> None:
    breaker = CircuitBreaker(failure_threshold=100, expected_exception=ConnectionError, name="kraken")

    def rejected_order() -> None:
        raise ValueError("insufficient funds")  # not a failure for this breaker

    with pytest.raises(ConnectionError), breaker:  # the library counts it; not a call(): not exported
        raise ConnectionError("down")
    with pytest.raises(ValueError):
        breaker.call(rejected_order)
    assert counts(instrumented, "kraken")[:2] == (1, 0)


def test_works_under_its_own_instrumentor_too(metrics: Metrics) -> None:
    inst = CircuitbreakerInstrumentor()
    inst.instrument(meter_provider=metrics.provider)
    try:
        circuit(name="alone")(lambda: 1)()
        assert counts(metrics, "alone") == (1, 0, 0)
    finally:
        inst.uninstrument()


# -- uninstrument and invisibility ------------------------------------------------------------------


def test_uninstrument_restores_every_class_attribute_exactly(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    assert_uninstrument_restores_classes(CLASSES, instrumentor, metrics.provider)


def test_breaker_stops_recording_after_uninstrument(instrumented: Metrics, instrumentor: TradingInstrumentor) -> None:
    @circuit(name="binance")
    def order() -> None:
        return None

    order()
    instrumentor.uninstrument()
    order()
    assert counts(instrumented, "binance") == (1, 0, 0)


def test_signatures_names_docs_and_function_kinds_are_unchanged(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    def describe() -> list[Any]:
        out: list[Any] = [str(inspect.signature(CircuitBreaker)), str(inspect.signature(CircuitBreakerError))]
        for name in ("__init__", "decorate", "call", "call_generator", "call_async", "call_async_generator"):
            attr = getattr(CircuitBreaker, name)
            out.append((name, str(inspect.signature(attr)), attr.__name__, attr.__qualname__, attr.__doc__))
            out.append(
                (inspect.isgeneratorfunction(attr), inspect.iscoroutinefunction(attr), inspect.isasyncgenfunction(attr))
            )

        def f() -> None: ...

        async def g() -> None: ...

        def h() -> Iterator[int]:
            yield 1

        async def i() -> AsyncIterator[int]:
            yield 1

        for fn in (f, g, h, i):
            wrapped = CircuitBreaker(name="x")(fn)
            out.append(
                (
                    wrapped.__name__,
                    inspect.isgeneratorfunction(wrapped),
                    inspect.iscoroutinefunction(wrapped),
                    inspect.isasyncgenfunction(wrapped),
                    wrapped.__wrapped__ is fn,
                )
            )
        return out

    plain = describe()
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert describe() == plain


def test_error_inside_instrumentation_is_logged_once_and_never_reaches_the_bot(
    instrumented: Metrics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: BreakerBinding, column: int, elapsed: float | None = None) -> None:
        raise RuntimeError("bug in otel-trading")

    monkeypatch.setattr(BreakerBinding, "count", broken)
    monkeypatch.setattr(BreakerBinding, "observe_state", broken)

    @circuit(failure_threshold=2, recovery_timeout=600, name="binance")
    def order(i: int) -> int:
        if i < 0:
            raise VenueDown("down")
        return i

    with caplog.at_level(logging.DEBUG, logger="otel_trading.instrumentation"):
        assert [order(i) for i in range(3)] == [0, 1, 2]
        for _ in range(2):
            with pytest.raises(VenueDown):
                order(-1)
        with pytest.raises(CircuitBreakerError):
            order(1)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # one per failing site (the error path, the rejection), each once
    assert all("bug in otel-trading" in str(r.exc_info[1]) for r in errors if r.exc_info)


# -- behaviour compared with and without the instrumentor ---------------------------------------------


class Probe:
    """What the decorated functions did: circuitbreaker's ground truth for the expected metrics."""

    def __init__(self) -> None:
        self.ran = 0


def _ops(probe: Probe, breaker: CircuitBreaker) -> dict[str, Callable[[], Any]]:
    def run(exc: BaseException | None) -> str:
        probe.ran += 1
        if exc is not None:
            raise exc
        return "ok"

    sync = breaker(run)

    def gen(exc: BaseException | None) -> Iterator[str]:
        probe.ran += 1
        yield "tick"
        if exc is not None:
            raise exc

    generator = breaker(gen)

    async def co(exc: BaseException | None) -> str:
        probe.ran += 1
        await asyncio.sleep(0)
        if exc is not None:
            raise exc
        return "ok"

    coro = breaker(co)
    return {
        "ok": lambda: sync(None),
        "fail": lambda: sync(VenueDown("down")),
        "excluded": lambda: sync(Rejected("business")),
        "gen_ok": lambda: list(generator(None)),
        "gen_fail": lambda: list(generator(VenueDown("feed"))),
        "async_ok": lambda: asyncio.run(coro(None)),
        "async_fail": lambda: asyncio.run(coro(VenueDown("down"))),
        "time_passes": lambda: expire(breaker),
        "reset": breaker.reset,
    }


def run_ops(ops: list[str], threshold: int, name: str) -> tuple[list[Any], list[dict[str, Any]], CircuitBreaker]:
    probe = Probe()
    breaker = CircuitBreaker(failure_threshold=threshold, recovery_timeout=600, expected_exception=VenueDown, name=name)
    table = _ops(probe, breaker)
    trace: list[Any] = []
    facts: list[dict[str, Any]] = []
    for op in ops:
        state_before, ran_before = breaker.state, probe.ran
        try:
            outcome: tuple[Any, ...] = ("returned", table[op]())
        except BaseException as exc:
            outcome = ("raised", type(exc).__name__, str(exc).split(" OPEN until ")[0])
            last = breaker.last_failure
            failed = last is exc
        else:
            failed = False
        trace.append(
            (
                op,
                outcome,
                breaker.state,
                breaker.failure_count,
                repr(breaker.last_failure),
                sorted(vars(breaker)),
                CircuitBreakerMonitor.get(name) is breaker,
            )
        )
        called = probe.ran > ran_before
        facts.append(
            {
                "state_before": state_before,
                "state_after": breaker.state,
                "called": called,
                "failed": called and failed,
                "rejected": outcome[:2] == ("raised", "CircuitBreakerError"),
            }
        )
    return trace, facts, breaker


def expected_metrics(facts: list[dict[str, Any]], final_state: str) -> dict[str, Any]:
    """What the metrics must say, from the library's own observables only.

    The library has no transition events: its half-open state is a reading of a timer. Transitions
    are the changes between the readings of ``state`` before and after each call through the
    breaker (rejected ones included) and at the collection.
    """
    codes = {"closed": 0, "open": 1, "half_open": 2}
    labels = {"closed": "closed", "open": "open", "half_open": "half_open"}
    readings = ["closed"]
    for f in facts:
        if f["called"] or f["rejected"]:
            readings += [f["state_before"], f["state_after"]]
    readings.append(final_state)
    moves: dict[tuple[str, str], int] = {}
    for a, b in itertools.pairwise(readings):
        if a != b:
            moves[(labels[a], labels[b])] = moves.get((labels[a], labels[b]), 0) + 1
    called = [f for f in facts if f["called"]]
    return {
        "successes": sum(1 for f in called if not f["failed"]),
        "failures": sum(1 for f in called if f["failed"]),
        "rejected": sum(1 for f in facts if f["rejected"]),
        "latency_count": len(called),
        "transitions": moves,
        "state": codes[readings[-1]],
    }


def observed_metrics(m: Metrics, name: str) -> dict[str, Any]:
    successes, failures, rejected = counts(m, name)
    return {
        "successes": successes,
        "failures": failures,
        "rejected": rejected,
        "latency_count": latency(m, name)[0],
        "transitions": transitions(m, name),
        "state": m.value(N["breaker_state"], name=name),
    }


_example = itertools.count()
OPS = ["ok", "fail", "excluded", "gen_ok", "gen_fail", "async_ok", "async_fail", "time_passes", "reset"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.sampled_from(OPS), max_size=25), threshold=st.integers(1, 3))
@example(ops=["fail", "reset", "fail"], threshold=1)  # a reset nobody observed, then a failure
@example(ops=["fail", "time_passes", "reset", "ok"], threshold=1)  # a half-open period nobody observed
@example(ops=["fail", "time_passes", "gen_fail", "time_passes", "async_ok", "ok"], threshold=1)
def test_circuitbreaker_behaves_identically_and_metrics_match_its_own_observables(
    ops: list[str], threshold: int
) -> None:
    name = f"prop-{next(_example)}"
    CircuitBreakerMonitor.circuit_breakers = {}
    gc.collect()
    plain_trace, _, _ = run_ops(ops, threshold, name)
    CircuitBreakerMonitor.circuit_breakers = {}
    metrics = make_metrics(with_views=True)
    inst = TradingInstrumentor()
    inst.instrument(meter_provider=metrics.provider, config={})
    try:
        traced, facts, breaker = run_ops(ops, threshold, name)
        observed = observed_metrics(metrics, name)
    finally:
        inst.uninstrument()
        metrics.provider.shutdown()
    assert traced == plain_trace
    assert observed == expected_metrics(facts, breaker.state)
    assert breaker.name == name
    assert circuitbreaker.CircuitBreakerMonitor.get(name) is breaker


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
