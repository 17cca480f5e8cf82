"""purgatory under ``TradingInstrumentor``: sync and async breakers, decorators and context managers.

Metric tests run on every histogram path (``metrics`` fixture). Invisibility is checked by running
the same operations with and without the instrumentor and comparing everything the bot can
observe (return values, exceptions, states, failure counts, the events purgatory's own hooks
receive), with the expected metrics derived from those hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import purgatory
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from purgatory.domain import model
from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker
from purgatory.service._sync.circuitbreaker import SyncCircuitBreaker

from otel_trading.instrumentation import PurgatoryInstrumentor, TradingInstrumentor
from otel_trading.instrumentation._core.binding import BreakerBinding
from otel_trading.metric_contract import METRICS_BY_KEY

from ..conftest import Metrics, assert_uninstrument_restores_classes, make_metrics, run_in_threads
from ..conftest import breaker_counts as counts
from ..conftest import breaker_latency as latency
from ..conftest import breaker_transitions as transitions

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}
CLASSES = [
    SyncCircuitBreaker,
    AsyncCircuitBreaker,
    model.Context,
    model.ClosedState,
    model.OpenedState,
    model.HalfOpenedState,
]

# Every test runs on the compiled hot paths and on their pure-Python twins.
pytestmark = pytest.mark.usefixtures("hot_path")


class VenueDown(ConnectionError):
    pass


class Rejected(Exception):
    """A business error: the venue answered."""

    def __init__(self, retryable: bool = False) -> None:
        super().__init__("rejected")
        self.retryable = retryable


def expire(factory: Any, name: str) -> None:
    """Let the TTL pass without waiting: purgatory compares ``opened_at + ttl`` with ``time.time()``."""
    context = factory.uow.contexts.breakers.get(name)  # the in-memory repository's own table
    if context is not None and context._state.opened_at is not None:
        context._state.opened_at -= 10_000


# -- the six metrics ---------------------------------------------------------------------------------


def test_sync_decorator_successes_failures_rejections_and_latency(instrumented: Metrics) -> None:
    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=3, default_ttl=600)
    calls = 0

    @factory("kraken")
    def place_order(fail: bool) -> str:
        nonlocal calls
        calls += 1
        time.sleep(0.01)
        if fail:
            raise VenueDown("kraken unreachable")
        return "filled"

    assert [place_order(False) for _ in range(2)] == ["filled"] * 2
    for _ in range(3):
        with pytest.raises(VenueDown):
            place_order(True)
    for _ in range(4):
        with pytest.raises(model.OpenedState):
            place_order(False)
    assert calls == 5
    assert counts(instrumented, "kraken") == (2, 3, 4)
    count, total = latency(instrumented, "kraken")
    assert count == 5 and total >= 0.05
    assert instrumented.value(N["breaker_state"], name="kraken") == 1
    assert transitions(instrumented, "kraken") == {("closed", "open"): 1}


def test_states_map_to_0_1_2_and_every_transition_is_counted(instrumented: Metrics) -> None:
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


def test_exclude_types_and_predicates_are_respected(instrumented: Metrics) -> None:
    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=10, exclude=[KeyError])

    @factory("binance", exclude=[(Rejected, lambda exc: not exc.retryable)])
    def order(exc: Exception | None) -> None:
        if exc is not None:
            raise exc

    for exc in (KeyError("k"), Rejected(retryable=False), Rejected(retryable=True), VenueDown("v"), None):
        with contextlib.suppress(Exception):
            order(exc)
    assert counts(instrumented, "binance") == (3, 2, 0)


def test_context_manager_latency_covers_the_whole_block(instrumented: Metrics) -> None:
    factory = purgatory.SyncCircuitBreakerFactory()
    started = time.perf_counter()
    with factory.get_breaker("feed"):
        time.sleep(0.02)
    with pytest.raises(VenueDown), factory.get_breaker("feed"):
        time.sleep(0.01)
        raise VenueDown("dropped")
    took = time.perf_counter() - started
    assert counts(instrumented, "feed") == (1, 1, 0)
    count, total = latency(instrumented, "feed")
    assert count == 2 and 0.03 <= total <= took


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


async def test_async_decorator_and_async_with_are_counted_and_timed(instrumented: Metrics) -> None:
    factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=2, default_ttl=600)

    @factory("async")
    async def order(fail: bool) -> str:
        await asyncio.sleep(0.02)
        if fail:
            raise VenueDown("down")
        return "filled"

    results = await asyncio.gather(order(False), order(False), order(False))
    assert results == ["filled"] * 3
    for _ in range(2):
        with pytest.raises(VenueDown):
            await order(True)
    with pytest.raises(model.OpenedState):
        await order(False)
    breaker = await factory.get_breaker("block")
    async with breaker:
        await asyncio.sleep(0.01)
    assert counts(instrumented, "async") == (3, 2, 1)
    count, total = latency(instrumented, "async")
    assert count == 5 and total >= 0.1  # three concurrent calls each took their 20 ms
    assert counts(instrumented, "block") == (1, 0, 0)
    assert latency(instrumented, "block")[1] >= 0.01
    assert instrumented.value(N["breaker_state"], name="async") == 1


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


def test_circuits_created_before_instrumentation_report_their_state(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=1, default_ttl=600)
    with pytest.raises(VenueDown), factory.get_breaker("early"):
        raise VenueDown("down")
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert metrics.value(N["breaker_state"], name="early") == 1
    with pytest.raises(model.OpenedState), factory.get_breaker("early"):
        pass
    assert counts(metrics, "early") == (0, 0, 1)


def test_concurrent_calls_from_threads_are_counted_exactly(instrumented: Metrics) -> None:
    factory = purgatory.SyncCircuitBreakerFactory()

    @factory("binance")
    def order() -> None:
        return None

    def worker() -> None:
        for _ in range(300):
            order()

    run_in_threads(8, worker)
    assert counts(instrumented, "binance") == (2400, 0, 0)
    assert latency(instrumented, "binance")[0] == 2400


def test_works_under_its_own_instrumentor_too(metrics: Metrics) -> None:
    inst = PurgatoryInstrumentor()
    inst.instrument(meter_provider=metrics.provider)
    try:
        with purgatory.SyncCircuitBreakerFactory().get_breaker("alone"):
            pass
        assert counts(metrics, "alone") == (1, 0, 0)
    finally:
        inst.uninstrument()


# -- uninstrument and invisibility ------------------------------------------------------------------


def test_uninstrument_restores_every_class_attribute_exactly(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    assert_uninstrument_restores_classes(CLASSES, instrumentor, metrics.provider)


def test_signatures_names_docs_and_function_kinds_are_unchanged(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    def describe() -> list[Any]:
        out: list[Any] = []
        for cls in CLASSES:
            for name, attr in sorted(vars(cls).items()):
                if inspect.isfunction(attr):
                    out.append(
                        (
                            cls.__name__,
                            name,
                            str(inspect.signature(attr)),
                            attr.__qualname__,
                            attr.__doc__,
                            inspect.iscoroutinefunction(attr),
                        )
                    )
        return out

    plain = describe()
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert describe() == plain


def test_error_inside_instrumentation_is_logged_once_and_never_reaches_the_bot(
    instrumented: Metrics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: BreakerBinding, *args: Any) -> None:
        raise RuntimeError("bug in otel-trading")

    monkeypatch.setattr(BreakerBinding, "count", broken)
    monkeypatch.setattr(BreakerBinding, "transition", broken)
    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=2, default_ttl=600)

    @factory("binance")
    def order(i: int) -> int:
        if i < 0:
            raise VenueDown("down")
        return i

    with caplog.at_level(logging.DEBUG, logger="otel_trading.instrumentation"):
        assert [order(i) for i in range(3)] == [0, 1, 2]
        for _ in range(2):
            with pytest.raises(VenueDown):
                order(-1)
        with pytest.raises(model.OpenedState):
            order(1)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3  # the failure, the transition, the rejection: each site once
    assert all("bug in otel-trading" in str(r.exc_info[1]) for r in errors if r.exc_info)


# -- behaviour compared with and without the instrumentor ---------------------------------------------


class Probe:
    """purgatory's own hook (``factory.add_listener``) and what the guarded code did."""

    def __init__(self) -> None:
        self.ran = 0
        self.events: list[tuple[Any, ...]] = []

    def hook(self, name: str, kind: str, event: Any) -> None:
        self.events.append((kind, getattr(event, "state", None), getattr(event, "failure_count", None)))


def _ops(probe: Probe, sync: Any, aio: Any, name: str) -> dict[str, Callable[[], Any]]:
    exclude = [Rejected, (KeyError, lambda exc: exc.args == ("excluded",))]

    def body(exc: BaseException | None) -> str:
        probe.ran += 1
        if exc is not None:
            raise exc
        return "ok"

    decorated = sync(name, exclude=exclude)(body)

    async def abody(exc: BaseException | None) -> str:
        probe.ran += 1
        await asyncio.sleep(0)
        if exc is not None:
            raise exc
        return "ok"

    adecorated = aio(name, exclude=exclude)(abody)

    def block(exc: BaseException | None) -> str:
        with sync.get_breaker(name, exclude=exclude):
            return body(exc)

    async def ablock(exc: BaseException | None) -> str:
        async with await aio.get_breaker(name, exclude=exclude):
            return await abody(exc)

    def time_passes() -> None:
        expire(sync, name)
        expire(aio, name)

    return {
        "ok": lambda: decorated(None),
        "fail": lambda: decorated(VenueDown("down")),
        "excluded": lambda: decorated(Rejected()),
        "pred_excluded": lambda: decorated(KeyError("excluded")),
        "pred_failure": lambda: decorated(KeyError("other")),
        "block_ok": lambda: block(None),
        "block_fail": lambda: block(VenueDown("down")),
        "async_ok": lambda: asyncio.run(adecorated(None)),
        "async_fail": lambda: asyncio.run(adecorated(VenueDown("down"))),
        "async_block_fail": lambda: asyncio.run(ablock(VenueDown("down"))),
        "time_passes": time_passes,
    }


def run_ops(ops: list[str], threshold: int, name: str) -> tuple[list[Any], list[dict[str, Any]], Probe]:
    probe = Probe()
    sync = purgatory.SyncCircuitBreakerFactory(default_threshold=threshold, default_ttl=600)
    aio = purgatory.AsyncCircuitBreakerFactory(default_threshold=threshold, default_ttl=600)
    sync.add_listener(probe.hook)
    aio.add_listener(probe.hook)
    table = _ops(probe, sync, aio, name)
    trace: list[Any] = []
    facts: list[dict[str, Any]] = []
    for op in ops:
        ran, first_event = probe.ran, len(probe.events)
        try:
            outcome: tuple[Any, ...] = ("returned", table[op]())
        except BaseException as exc:
            outcome = ("raised", type(exc).__name__, str(exc))
        events = probe.events[first_event:]
        contexts = [sync.uow.contexts.breakers.get(name), aio.uow.contexts.breakers.get(name)]
        trace.append(
            (
                op,
                outcome,
                [(c.state, c.failure_count, c.threshold, c.ttl) if c is not None else None for c in contexts],
                events,
            )
        )
        failed = any(kind == "failed" for kind, *_ in events) or any(
            kind == "state_changed" and state == "opened" for kind, state, _ in events
        )
        facts.append({"called": probe.ran > ran, "failed": failed, "rejected": outcome[1:2] == ("OpenedState",)})
    return trace, facts, probe


def expected_metrics(facts: list[dict[str, Any]], probe: Probe) -> dict[str, Any]:
    """What the metrics must say, from purgatory's own hook events and the probe only."""
    labels = {"closed": "closed", "opened": "open", "half-opened": "half_open"}
    moves: dict[tuple[str, str], int] = {}
    last = state = "closed"
    for kind, new, _ in probe.events:
        if kind == "circuit_breaker_created":
            state = "closed"  # a new context: the state gauge reports it
        elif kind == "state_changed":
            key = (labels[last], labels[new])
            moves[key] = moves.get(key, 0) + 1
            last = state = new
    called = [f for f in facts if f["called"]]
    return {
        "successes": sum(1 for f in called if not f["failed"]),
        "failures": sum(1 for f in called if f["failed"]),
        "rejected": sum(1 for f in facts if f["rejected"]),
        "latency_count": len(called),
        "transitions": moves,
        "state": {"closed": 0, "opened": 1, "half-opened": 2}[state] if probe.events else None,
    }


def observed_metrics(m: Metrics, name: str) -> dict[str, Any]:
    successes, failures, rejected = counts(m, name)
    return {
        "successes": successes or 0,
        "failures": failures or 0,
        "rejected": rejected or 0,
        "latency_count": latency(m, name)[0],
        "transitions": transitions(m, name),
        "state": m.value(N["breaker_state"], name=name),
    }


_example = itertools.count()
SYNC_OPS = ["ok", "fail", "excluded", "pred_excluded", "pred_failure", "block_ok", "block_fail", "time_passes"]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.sampled_from(SYNC_OPS), max_size=25), threshold=st.integers(1, 3))
@example(ops=["fail", "time_passes", "fail", "time_passes", "ok", "ok"], threshold=1)
@example(ops=["pred_failure", "pred_excluded", "excluded", "block_fail", "block_fail", "ok"], threshold=2)
def test_purgatory_behaves_identically_and_metrics_match_its_own_hooks(ops: list[str], threshold: int) -> None:
    name = f"prop-{next(_example)}"
    gc.collect()
    plain_trace, _, _ = run_ops(ops, threshold, name)
    metrics = make_metrics(with_views=True)
    inst = TradingInstrumentor()
    inst.instrument(meter_provider=metrics.provider, config={})
    try:
        traced, facts, probe = run_ops(ops, threshold, name)
        observed = observed_metrics(metrics, name)
    finally:
        inst.uninstrument()
        metrics.provider.shutdown()
    assert traced == plain_trace
    assert observed == expected_metrics(facts, probe)


@pytest.mark.parametrize(
    "ops",
    [
        ["async_ok", "async_fail", "async_fail", "async_ok", "async_block_fail"],
        ["async_fail", "async_ok", "async_block_fail", "async_block_fail", "async_ok", "async_ok"],
    ],
)
def test_async_breakers_behave_identically_and_metrics_match_their_hooks(ops: list[str]) -> None:
    name = f"async-{next(_example)}"
    plain_trace, _, _ = run_ops(ops, 2, name)
    metrics = make_metrics(with_views=False)
    inst = TradingInstrumentor()
    inst.instrument(meter_provider=metrics.provider, config={})
    try:
        traced, facts, probe = run_ops(ops, 2, name)
        observed = observed_metrics(metrics, name)
    finally:
        inst.uninstrument()
        metrics.provider.shutdown()
    assert traced == plain_trace
    assert observed == expected_metrics(facts, probe)
