"""pybreaker under ``TradingInstrumentor``: the breaker metrics it exports, and that pybreaker cannot tell.

Metric tests run on both histogram paths (``metrics`` fixture). Invisibility is checked by running
the same pybreaker operations with and without the instrumentor and comparing everything the bot
can observe: return values, exceptions, state sequence, counters, listener callbacks, the
breaker's attributes and the library's classes.
"""

from __future__ import annotations

import gc
import inspect
import itertools
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pybreaker
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_trading.instrumentation import PybreakerInstrumentor, TradingInstrumentor
from otel_trading.instrumentation._core.binding import BreakerBinding
from otel_trading.metric_contract import METRICS_BY_KEY

from ..conftest import Metrics, assert_uninstrument_restores_classes, make_metrics, run_in_threads

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}
PYBREAKER_CLASSES = [obj for obj in vars(pybreaker).values() if isinstance(obj, type) and obj.__module__ == "pybreaker"]

# Every test runs on the compiled hot paths and on their pure-Python twins.
pytestmark = pytest.mark.usefixtures("hot_path")


class Boom(Exception):
    pass


class Excluded(Exception):
    pass


def boom() -> None:
    raise Boom("venue down")


def trip(breaker: pybreaker.CircuitBreaker, failures: int) -> None:
    for _ in range(failures):
        with pytest.raises((Boom, pybreaker.CircuitBreakerError)):
            breaker.call(boom)


# -- the five guide metrics (plus rejected) ------------------------------------------------------------


def test_successes_are_counted_per_breaker_name(instrumented: Metrics) -> None:
    breaker = pybreaker.CircuitBreaker(name="binance")
    for _ in range(4):
        breaker.call(lambda: None)
    assert instrumented.value(N["breaker_successes"], name="binance") == 4


def test_failures_are_counted_including_the_one_that_trips(instrumented: Metrics) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=600, name="kraken")
    trip(breaker, 3)
    assert instrumented.value(N["breaker_failures"], name="kraken") == 3


def test_calls_refused_while_open_are_counted_as_rejected(instrumented: Metrics) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=600, name="kraken")
    trip(breaker, 1)
    for _ in range(5):
        with pytest.raises(pybreaker.CircuitBreakerError):
            breaker.call(lambda: None)
    assert instrumented.value(N["breaker_rejected"], name="kraken") == 5
    assert instrumented.value(N["breaker_failures"], name="kraken") == 1


def test_state_gauge_maps_closed_open_half_open_to_0_1_2(instrumented: Metrics) -> None:
    breaker = pybreaker.CircuitBreaker(name="binance")
    seen = []
    for move in (breaker.close, breaker.open, breaker.half_open, breaker.close):
        move()
        seen.append(instrumented.value(N["breaker_state"], name="binance"))
    assert seen == [0, 1, 2, 0]


def test_transitions_are_counted_with_the_guides_state_labels(instrumented: Metrics) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=0, name="binance")
    trip(breaker, 1)  # closed -> open
    breaker.call(lambda: None)  # open -> half_open (timeout 0) -> closed on the trial's success
    points = {
        (p.attributes["from_state"], p.attributes["to_state"]): p.value
        for p in instrumented.points(N["breaker_transitions"])
        if p.attributes["name"] == "binance"
    }
    assert points == {("closed", "open"): 1, ("open", "half_open"): 1, ("half_open", "closed"): 1}


def test_forcing_the_current_state_again_is_not_a_transition(instrumented: Metrics) -> None:
    breaker = pybreaker.CircuitBreaker(name="binance")
    breaker.open()
    breaker.open()  # pybreaker notifies listeners of open -> open
    assert [p.value for p in instrumented.points(N["breaker_transitions"])] == [1]


def test_latency_histogram_times_successes_and_failures_but_not_rejections(instrumented: Metrics) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=600, name="binance")
    breaker.call(time.sleep, 0.02)
    trip(breaker, 2)
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(lambda: None)
    point = instrumented.histogram(N["breaker_latency"], name="binance")
    assert point is not None
    assert point.count == 3
    assert 0.02 <= point.sum < 1.0


def test_excluded_exception_counts_as_a_success_like_pybreaker_does(instrumented: Metrics) -> None:
    breaker = pybreaker.CircuitBreaker(name="binance", exclude=[Excluded])

    def business_error() -> None:
        raise Excluded("insufficient funds")

    with pytest.raises(Excluded):
        breaker.call(business_error)
    assert instrumented.value(N["breaker_successes"], name="binance") == 1
    assert instrumented.value(N["breaker_failures"], name="binance") == 0


def test_failed_half_open_trial_is_a_failure_not_a_rejection(instrumented: Metrics) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=0, name="kraken")
    trip(breaker, 1)
    with pytest.raises(pybreaker.CircuitBreakerError, match="Trial call failed"):
        breaker.call(boom)
    assert instrumented.value(N["breaker_failures"], name="kraken") == 2
    assert instrumented.value(N["breaker_rejected"], name="kraken") == 0


def test_calling_context_manager_is_counted_and_timed_over_the_block(instrumented: Metrics) -> None:
    breaker = pybreaker.CircuitBreaker(name="binance")
    with breaker.calling():
        time.sleep(0.02)
    with pytest.raises(Boom), breaker.calling():
        raise Boom()
    assert instrumented.value(N["breaker_successes"], name="binance") == 1
    assert instrumented.value(N["breaker_failures"], name="binance") == 1
    point = instrumented.histogram(N["breaker_latency"], name="binance")
    assert point is not None and point.count == 2 and point.sum >= 0.02


def test_concurrent_calls_from_threads_are_counted_exactly(instrumented: Metrics) -> None:
    breaker = pybreaker.CircuitBreaker(name="binance")

    def worker() -> None:
        for _ in range(500):
            breaker.call(lambda: None)

    run_in_threads(8, worker)
    assert instrumented.value(N["breaker_successes"], name="binance") == 4000


# -- which breakers are covered --------------------------------------------------------------------------


def test_breaker_created_before_instrumentation_is_reported_without_any_call(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    breaker = pybreaker.CircuitBreaker(name="early")
    breaker.open()
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert metrics.value(N["breaker_state"], name="early") == 1


def test_breaker_created_after_instrumentation_reports_its_state_before_any_call(
    instrumented: Metrics,
) -> None:
    # Kept alive: the gauge rightly drops a collected breaker, and an unreferenced one may be
    # collected (its reference cycles) by any allocation before the collection below.
    breaker = pybreaker.CircuitBreaker(name="late")
    assert instrumented.value(N["breaker_state"], name="late") == 0
    assert breaker.name == "late"


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


def test_uses_the_global_meter_provider_when_none_is_given(
    global_metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    instrumentor.instrument(config={})
    pybreaker.CircuitBreaker(name="global").call(lambda: None)
    assert global_metrics.value(N["breaker_successes"], name="global") == 1


# -- uninstrument --------------------------------------------------------------------------------------


def test_uninstrument_restores_every_pybreaker_class_attribute_exactly(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    assert_uninstrument_restores_classes(PYBREAKER_CLASSES, instrumentor, metrics.provider)


def test_breaker_stops_recording_after_uninstrument(instrumented: Metrics, instrumentor: TradingInstrumentor) -> None:
    breaker = pybreaker.CircuitBreaker(name="binance")
    breaker.call(lambda: None)
    instrumentor.uninstrument()
    breaker.call(lambda: None)
    assert instrumented.value(N["breaker_successes"], name="binance") == 1


# -- invisibility --------------------------------------------------------------------------------------


class Recorder(pybreaker.CircuitBreakerListener):
    """The bot's own listener; its callbacks are pybreaker's ground truth."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        self.events.append(("before_call",))

    def success(self, cb: Any) -> None:
        self.events.append(("success",))

    def failure(self, cb: Any, exc: BaseException) -> None:
        self.events.append(("failure", type(exc).__name__))

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self.events.append(("state_change", old_state.name if old_state else None, new_state.name))


def _gen() -> Iterator[int]:
    yield 1
    yield 2


def _calling_ok(b: pybreaker.CircuitBreaker) -> str:
    with b.calling():
        return "block ran"


def _calling_fail(b: pybreaker.CircuitBreaker) -> None:
    with b.calling():
        raise Boom("in block")


def _raise_excluded() -> None:
    raise Excluded("business")


OPS: dict[str, Callable[[pybreaker.CircuitBreaker], Any]] = {
    "ok": lambda b: b.call(lambda: "filled"),
    "fail": lambda b: b.call(boom),
    "excluded": lambda b: b.call(_raise_excluded),
    "decorated": lambda b: b(lambda x: x * 2)(21),
    "generator": lambda b: list(b.call(_gen)),
    "calling_ok": _calling_ok,
    "calling_fail": _calling_fail,
    "open": lambda b: b.open(),
    "close": lambda b: b.close(),
    "half_open": lambda b: b.half_open(),
}


def run_ops(
    ops: list[str], fail_max: int, timeout: float, success_threshold: int, name: str
) -> tuple[list[Any], Recorder, pybreaker.CircuitBreaker]:
    recorder = Recorder()
    b = pybreaker.CircuitBreaker(
        fail_max=fail_max,
        reset_timeout=timeout,
        success_threshold=success_threshold,
        exclude=[Excluded],
        listeners=[recorder],
        name=name,
    )
    trace: list[Any] = []
    for op in ops:
        start = len(recorder.events)
        try:
            outcome: tuple[Any, ...] = ("returned", OPS[op](b))
        except BaseException as exc:
            outcome = ("raised", type(exc).__name__, str(exc))
        trace.append(
            (
                op,
                outcome,
                b.current_state,
                b.state.name,
                b.fail_counter,
                b.success_counter,
                b.listeners == (recorder,),
                sorted(vars(b)),
                recorder.events[start:],
            )
        )
    return trace, recorder, b


def expected_metrics(trace: list[Any], recorder: Recorder) -> dict[str, Any]:
    """What the metrics must say, derived only from pybreaker's own listener callbacks."""
    transitions: dict[tuple[str, str], int] = {}
    for event in recorder.events:
        if event[0] == "state_change" and event[1] != event[2]:
            key = (event[1].replace("-", "_"), event[2].replace("-", "_"))
            transitions[key] = transitions.get(key, 0) + 1
    rejected = sum(
        1
        for op, outcome, *_, events in trace
        if outcome[:2] == ("raised", "CircuitBreakerError") and ("before_call",) not in events
    )
    successes = sum(1 for e in recorder.events if e == ("success",))
    failures = sum(1 for e in recorder.events if e[0] == "failure")
    return {
        "successes": successes,
        "failures": failures,
        "rejected": rejected,
        "latency_count": successes + failures,
        "transitions": transitions,
        "state": {"closed": 0, "open": 1, "half-open": 2}[trace[-1][2]] if trace else 0,
    }


def observed_metrics(m: Metrics, name: str) -> dict[str, Any]:
    hist = m.histogram(N["breaker_latency"], name=name)
    return {
        "successes": m.value(N["breaker_successes"], name=name),
        "failures": m.value(N["breaker_failures"], name=name),
        "rejected": m.value(N["breaker_rejected"], name=name),
        "latency_count": hist.count if hist is not None else 0,
        "transitions": {
            (p.attributes["from_state"], p.attributes["to_state"]): p.value
            for p in m.points(N["breaker_transitions"])
            if p.attributes["name"] == name
        },
        "state": m.value(N["breaker_state"], name=name),
    }


_example = itertools.count()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(st.sampled_from(sorted(OPS)), max_size=25),
    fail_max=st.integers(1, 4),
    timeout=st.sampled_from([0, 3600]),
    success_threshold=st.integers(1, 2),
)
def test_pybreaker_behaves_identically_and_metrics_match_its_own_callbacks(
    ops: list[str], fail_max: int, timeout: float, success_threshold: int
) -> None:
    # A fresh name per example: breakers of earlier examples may still be alive (reference cycles)
    # and, being pre-existing pybreaker breakers, are rightly picked up by instrument().
    name = f"prop-{next(_example)}"
    # Unreachable breakers of earlier tests (reference cycles) would otherwise still be found by
    # instrument()'s scan of live objects; collect them so each example starts from the same world.
    gc.collect()
    plain_trace, _, _ = run_ops(ops, fail_max, timeout, success_threshold, "plain")
    metrics = make_metrics(with_views=True)
    inst = TradingInstrumentor()
    inst.instrument(meter_provider=metrics.provider, config={})
    try:
        traced, recorder, breaker = run_ops(ops, fail_max, timeout, success_threshold, name)
        observed = observed_metrics(metrics, name)  # while ``breaker`` is alive: the state gauge needs it
    finally:
        inst.uninstrument()
        metrics.provider.shutdown()
    assert traced == plain_trace
    assert observed == expected_metrics(traced, recorder)
    assert breaker.name == name


def test_breaker_attributes_listeners_and_storage_are_untouched(instrumented: Metrics) -> None:
    listener = Recorder()
    breaker = pybreaker.CircuitBreaker(name="binance", listeners=[listener])
    storage = breaker._state_storage
    own_list = breaker._listeners
    breaker.call(lambda: None)
    trip(breaker, 5)
    assert breaker.listeners == (listener,)
    assert breaker._listeners is own_list and own_list == [listener]
    assert breaker._state_storage is storage
    assert sorted(vars(breaker)) == sorted(vars(pybreaker.CircuitBreaker(name="x")))
    assert breaker.fail_counter == 5 and breaker.current_state == "open"


def test_signatures_names_and_docs_of_wrapped_methods_are_unchanged(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    def describe() -> list[Any]:
        out: list[Any] = [str(inspect.signature(pybreaker.CircuitBreaker))]
        for cls in (pybreaker.CircuitBreaker, pybreaker.CircuitBreakerState, pybreaker.CircuitOpenState):
            for name in (
                "__init__",
                "call",
                "_inc_counter",
                "_handle_success",
                "before_call",
                "generator_call",
            ):
                attr = getattr(cls, name, None)
                if attr is not None:
                    out.append((cls.__name__, name, str(inspect.signature(attr)), attr.__name__, attr.__doc__))
        out.append(inspect.isgeneratorfunction(pybreaker.CircuitBreakerState.generator_call))
        return out

    plain = describe()
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert describe() == plain


# -- containment ------------------------------------------------------------------------------------


def test_error_inside_instrumentation_is_logged_once_and_never_reaches_the_bot(
    instrumented: Metrics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: BreakerBinding, column: int, elapsed: float | None = None) -> None:
        raise RuntimeError("bug in otel-trading")

    monkeypatch.setattr(BreakerBinding, "count", broken)
    breaker = pybreaker.CircuitBreaker(fail_max=2, name="binance")
    with caplog.at_level(logging.DEBUG, logger="otel_trading.instrumentation"):
        assert [breaker.call(lambda i=i: i) for i in range(3)] == [0, 1, 2]
        with pytest.raises(Boom):
            breaker.call(boom)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "bug in otel-trading" in str(errors[0].exc_info[1])


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
    assert instrumented.value(N["breaker_state"], name="redis") == 1
    assert instrumented.value(N["breaker_transitions"], name="redis", from_state="closed", to_state="open") == 1


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
