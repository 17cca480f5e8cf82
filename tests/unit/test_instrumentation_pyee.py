"""pyee under ``TradingInstrumentor``: event-bus metrics per event name, and that pyee cannot tell.

Metric tests run on every histogram path (``metrics`` fixture). Invisibility is checked by running
the same emits with and without the instrumentor and comparing everything the bot can observe
(handler calls, ``emit`` results, exceptions, ``error`` events, listeners), with the expected
metrics derived from those observations only.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import inspect
import itertools
import logging
import pickle
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyee
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pyee.asyncio import AsyncIOEventEmitter
from pyee.executor import ExecutorEventEmitter
from pyee.uplift import unwrap, uplift

from otel_trading.instrumentation import PyeeInstrumentor, TradingInstrumentor
from otel_trading.instrumentation.pyee import hooks as pyee_target
from otel_trading.metric_contract import METRICS_BY_KEY

from ..conftest import Metrics, assert_uninstrument_restores_classes, make_metrics, run_in_threads

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}
CLASSES = [pyee.EventEmitter, AsyncIOEventEmitter, ExecutorEventEmitter]

# Every test runs on the compiled hot paths and on their pure-Python twins.
pytestmark = pytest.mark.usefixtures("hot_path")


class Bug(Exception):
    pass


@pytest.fixture(autouse=True)
def _no_emitters_of_earlier_tests() -> None:
    # Emitters in reference cycles (``once`` handlers, pending tasks) outlive their test until a GC
    # pass; instrument() rightly binds every live emitter, so collect them first.
    gc.collect()


def bus(m: Metrics, event: str) -> tuple[Any, Any, Any]:
    return (
        m.value(N["bus_published"], event_type=event),
        m.value(N["bus_processed"], event_type=event),
        m.value(N["bus_handler_errors"], event_type=event),
    )


def duration(m: Metrics, event: str) -> tuple[int, float]:
    point = m.histogram(N["bus_processing_duration"], event_type=event)
    return (point.count, point.sum) if point is not None else (0, 0.0)


def event_types(m: Metrics) -> set[str]:
    return {
        p.attributes["event_type"]
        for name in N.values()
        if name.startswith("event_bus")
        for p in m.points(name)
        if "event_type" in p.attributes
    }


# -- EventEmitter (handlers run inline) ----------------------------------------------------------------


def test_published_processed_and_duration_per_event_name(instrumented: Metrics) -> None:
    ee = pyee.EventEmitter()
    ee.on("tick", lambda seq: time.sleep(0.005))
    ee.on("tick", lambda seq: None)
    ee.on("fill", lambda fill: None)
    started = time.perf_counter()
    for seq in range(4):
        assert ee.emit("tick", seq) is True
    took = time.perf_counter() - started
    ee.emit("fill", {"qty": 1})
    assert ee.emit("nobody-listens") is False
    assert bus(instrumented, "tick") == (4, 4, 0)
    assert bus(instrumented, "fill") == (1, 1, 0)
    assert bus(instrumented, "nobody-listens") == (1, 0, 0)
    count, total = duration(instrumented, "tick")
    assert count == 4 and 0.02 <= total <= took


def test_a_failing_handler_is_a_handler_error_of_its_event(instrumented: Metrics) -> None:
    ee = pyee.EventEmitter()

    @ee.on("tick")
    def recorder(seq: int) -> None:
        if seq == 2:
            raise Bug("bug in the recorder")

    for seq in range(4):
        if seq == 2:
            with pytest.raises(Bug):  # the base emitter lets it propagate, as without otel-trading
                ee.emit("tick", seq)
        else:
            ee.emit("tick", seq)
    assert bus(instrumented, "tick") == (4, 4, 1)
    assert duration(instrumented, "tick")[0] == 4


def test_pyees_own_events_are_not_the_apps(instrumented: Metrics) -> None:
    ee = pyee.EventEmitter()
    seen: list[Any] = []
    ee.on("new_listener", lambda event, f: seen.append(event))
    ee.on("error", seen.append)
    ee.on("tick", lambda: None)  # fires new_listener
    ee.emit("error", Bug("reported by the app"))
    ee.emit("tick")
    assert seen[0] == "error" and seen[1] == "tick" and isinstance(seen[2], Bug)
    assert event_types(instrumented) == {"tick"}
    assert instrumented.value(N["bus_subscribers"], event_type="tick") == 1


def test_subscribers_follow_on_once_and_remove_listener(instrumented: Metrics) -> None:
    ee = pyee.EventEmitter()
    a = ee.on("tick", lambda: None)
    ee.on("tick", lambda: None)
    ee.once("fill", lambda: None)
    assert instrumented.value(N["bus_subscribers"], event_type="tick") == 2
    assert instrumented.value(N["bus_subscribers"], event_type="fill") == 1
    ee.remove_listener("tick", a)
    ee.emit("fill")  # a once handler leaves
    assert instrumented.value(N["bus_subscribers"], event_type="tick") == 1
    assert instrumented.value(N["bus_subscribers"], event_type="fill") in (None, 0)


def test_the_base_emitter_has_no_queue_to_report(instrumented: Metrics) -> None:
    ee = pyee.EventEmitter()
    ee.on("tick", lambda: None)
    ee.emit("tick")
    assert instrumented.points(N["bus_queue_size"]) == []


def test_emitters_created_before_instrumentation_are_found(metrics: Metrics, instrumentor: TradingInstrumentor) -> None:
    ee = pyee.EventEmitter()
    ee.on("tick", lambda: None)
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert metrics.value(N["bus_subscribers"], event_type="tick") == 1
    ee.emit("tick")
    assert bus(metrics, "tick") == (1, 1, 0)


def test_concurrent_emits_from_threads_are_counted_exactly(instrumented: Metrics) -> None:
    ee = pyee.EventEmitter()
    ee.on("tick", lambda: None)

    def worker() -> None:
        for _ in range(500):
            ee.emit("tick")

    run_in_threads(8, worker)
    assert bus(instrumented, "tick") == (4000, 4000, 0)


# -- AsyncIOEventEmitter (coroutine handlers run as tasks) ---------------------------------------------


async def test_async_handlers_are_processed_and_timed_when_their_tasks_end(instrumented: Metrics) -> None:
    ee = AsyncIOEventEmitter()
    done: list[int] = []

    @ee.on("fill")
    async def book(seq: int) -> None:
        await asyncio.sleep(0.02)
        done.append(seq)

    ee.on("fill", lambda seq: None)  # a sync handler beside it: the event waits for both
    for seq in range(3):
        ee.emit("fill", seq)
    assert bus(instrumented, "fill") == (3, 0, 0)  # published; not processed while a handler runs
    assert instrumented.value(N["bus_queue_size"], bus="AsyncIOEventEmitter") == 3
    await ee.wait_for_complete()
    await asyncio.sleep(0)
    assert done == [0, 1, 2]
    assert bus(instrumented, "fill") == (3, 3, 0)
    count, total = duration(instrumented, "fill")
    assert count == 3 and total >= 0.06
    assert instrumented.value(N["bus_queue_size"], bus="AsyncIOEventEmitter") == 0


async def test_async_handler_errors_count_under_the_events_type_not_as_error_events(
    instrumented: Metrics,
) -> None:
    ee = AsyncIOEventEmitter()
    errors: list[BaseException] = []
    ee.on("error", errors.append)

    @ee.on("fill")
    async def failing(seq: int) -> None:
        await asyncio.sleep(0.01)
        if seq % 2:
            raise Bug(f"bad fill {seq}")

    @ee.on("tick")
    def failing_now(seq: int) -> None:
        raise Bug("sync handler")

    for seq in range(4):
        ee.emit("fill", seq)
    ee.emit("tick", 0)
    await ee.wait_for_complete()
    await asyncio.sleep(0)
    assert sorted(str(e) for e in errors) == ["bad fill 1", "bad fill 3", "sync handler"]
    assert bus(instrumented, "fill") == (4, 4, 2)
    assert bus(instrumented, "tick") == (1, 1, 1)
    assert event_types(instrumented) == {"fill", "tick"}


async def test_cancelled_handler_tasks_complete_their_event_without_an_error(instrumented: Metrics) -> None:
    ee = AsyncIOEventEmitter()

    @ee.on("fill")
    async def slow() -> None:
        await asyncio.sleep(10)

    ee.emit("fill")
    await asyncio.sleep(0)
    ee.cancel()
    await asyncio.sleep(0.01)
    assert bus(instrumented, "fill") == (1, 1, 0)


async def test_handler_tasks_cancelled_before_their_first_step_complete_their_event(
    instrumented: Metrics, recwarn: pytest.WarningsRecorder
) -> None:
    ee = AsyncIOEventEmitter()

    @ee.on("fill")
    async def slow() -> None:
        await asyncio.sleep(10)

    ee.emit("fill")
    ee.emit("fill")
    ee.cancel()  # before either task ran a step
    await asyncio.sleep(0.01)
    gc.collect()
    assert bus(instrumented, "fill") == (2, 2, 0)
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


# -- ExecutorEventEmitter (handlers run in an executor) -------------------------------------------------


def test_executor_handlers_are_processed_when_their_futures_complete(instrumented: Metrics) -> None:
    errors: list[BaseException] = []
    ee = ExecutorEventEmitter(ThreadPoolExecutor(max_workers=2))
    ee.on("error", errors.append)

    @ee.on("tick")
    def handler(seq: int) -> None:
        time.sleep(0.01)
        if seq == 3:
            raise Bug("bad tick")

    for seq in range(5):
        ee.emit("tick", seq)
    deadline = time.monotonic() + 10
    while bus(instrumented, "tick")[1] != 5 or not errors:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    ee.shutdown()  # the error handler runs on the executor too: shut down once it has run
    assert [str(e) for e in errors] == ["bad tick"]
    assert bus(instrumented, "tick") == (5, 5, 1)
    count, total = duration(instrumented, "tick")
    assert count == 5 and total >= 0.05
    assert instrumented.points(N["bus_queue_size"]) == []


# -- other emitters -------------------------------------------------------------------------------------


def test_uplifted_emit_is_published_once(instrumented: Metrics) -> None:
    underlying = pyee.EventEmitter()
    underlying.on("tick", lambda: None)
    new = uplift(pyee.EventEmitter, underlying)
    try:
        new.on("tick", lambda: None)
        underlying.emit("tick")
        new.emit("tick")
    finally:
        unwrap(new)  # else pyee.uplift keeps both emitters for ever
    published, processed, errors = bus(instrumented, "tick")
    assert published == 2
    assert processed == 4  # one per emitter that ran handlers for it
    assert errors == 0


def test_an_emitter_with_its_own_emit_run_counts_subscribers_only_and_says_so_once(
    instrumented: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    class Deferred(pyee.EventEmitter):
        """Runs handlers later, somewhere otel-trading cannot see them end."""

        def __init__(self) -> None:
            super().__init__()
            self.later: list[Callable[[], Any]] = []

        def _emit_run(self, f: Callable[..., Any], args: Any, kwargs: Any) -> None:
            self.later.append(lambda: f(*args, **kwargs))

    with caplog.at_level(logging.WARNING, logger="otel_trading.instrumentation"):
        ee, other = Deferred(), Deferred()
    for emitter in (ee, other):
        emitter.on("tick", lambda: None)
        emitter.emit("tick")
    # Published but never seen processed would read as stuck events: not counted at all.
    published, processed, errors = bus(instrumented, "tick")
    assert published is None and not processed and not errors
    assert instrumented.value(N["bus_subscribers"], event_type="tick") == 2
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "Deferred runs its handlers with an _emit_run otel-trading does not know" in warning


def test_works_under_its_own_instrumentor_too(metrics: Metrics) -> None:
    inst = PyeeInstrumentor()
    inst.instrument(meter_provider=metrics.provider)
    try:
        ee = pyee.EventEmitter()
        ee.on("alone", lambda: None)
        ee.emit("alone")
        assert bus(metrics, "alone") == (1, 1, 0)
    finally:
        inst.uninstrument()


# -- uninstrument and invisibility ------------------------------------------------------------------


def test_uninstrument_restores_every_class_attribute_exactly(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    assert_uninstrument_restores_classes(CLASSES, instrumentor, metrics.provider)


def test_signatures_names_docs_and_pickling_are_unchanged(metrics: Metrics, instrumentor: TradingInstrumentor) -> None:
    def describe() -> list[Any]:
        out: list[Any] = []
        for cls in CLASSES:
            for name, attr in sorted(vars(cls).items()):
                if inspect.isfunction(attr):
                    out.append((cls.__name__, name, str(inspect.signature(attr)), attr.__qualname__, attr.__doc__))
        ee = pyee.EventEmitter()
        ee.on("tick", print)
        clone = pickle.loads(pickle.dumps(ee))
        out.append((sorted(vars(ee)), clone.listeners("tick") == [print]))
        return out

    plain = describe()
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert describe() == plain


def test_an_emitter_run_of_an_unknown_shape_leaves_pyee_out_whole_with_one_warning(
    metrics: Metrics,
    instrumentor: TradingInstrumentor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def _emit_run(self: Any, f: Callable[..., Any], args: Any, kwargs: Any) -> None:  # not pyee's
        f(*args, **kwargs)

    monkeypatch.setattr(AsyncIOEventEmitter, "_emit_run", _emit_run)
    with caplog.at_level(logging.WARNING, logger="otel_trading.instrumentation"):
        instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert vars(AsyncIOEventEmitter)["_emit_run"] is _emit_run
    assert "_call_handlers" not in {name for _, name in instrumentor.patched}
    emitter = pyee.EventEmitter()
    emitter.on("tick", lambda seq: None)
    emitter.emit("tick", 1)
    assert metrics.value("event_bus_events_published_total", event_type="tick") is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"pyee {importlib.metadata.version('pyee')} on CPython {platform.python_version()}" in warnings[0]
    assert "AsyncIOEventEmitter._emit_run: names -Any" in warnings[0]


def test_error_inside_instrumentation_is_logged_once_and_never_reaches_the_bot(
    instrumented: Metrics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("bug in otel-trading")

    monkeypatch.setattr(pyee_target._Event, "observe", broken)
    monkeypatch.setattr(pyee_target._Event, "error", broken)
    ee = AsyncIOEventEmitter()
    calls: list[int] = []
    ee.on("tick", calls.append)
    errors: list[BaseException] = []
    ee.on("error", errors.append)

    @ee.on("fill")
    def bad(seq: int) -> None:
        raise Bug("handler")

    async def main() -> None:
        for seq in range(3):
            ee.emit("tick", seq)
            ee.emit("fill", seq)
        await asyncio.sleep(0)

    with caplog.at_level(logging.DEBUG, logger="otel_trading.instrumentation"):
        asyncio.run(main())
    assert calls == [0, 1, 2] and len(errors) == 3
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert 1 <= len(failures) <= 2 and all("bug in otel-trading" in str(r.exc_info[1]) for r in failures)


# -- behaviour compared with and without the instrumentor ---------------------------------------------


class Probe:
    """What the handlers did: pyee's ground truth for the expected metrics."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    def handler(self, tag: str, fail_on: int | None = None, is_async: bool = False) -> Callable[..., Any]:
        probe = self

        if is_async:

            async def ahandler(seq: int) -> None:
                await asyncio.sleep(0)
                probe.log.append((tag, seq, seq == fail_on))
                if seq == fail_on:
                    raise Bug(f"{tag} {seq}")

            return ahandler

        def handler(seq: int) -> None:
            probe.log.append((tag, seq, seq == fail_on))
            if seq == fail_on:
                raise Bug(f"{tag} {seq}")

        return handler


def run_ops(ops: list[tuple[str, str]], use_async: bool) -> tuple[list[Any], dict[str, Any]]:
    probe = Probe()
    trace: list[Any] = []
    expected: dict[str, Any] = {"published": {}, "processed": {}, "errors": {}}

    async def main() -> None:
        ee: Any = AsyncIOEventEmitter() if use_async else pyee.EventEmitter()
        errors: list[str] = []
        if use_async:
            ee.on("error", lambda exc: errors.append(str(exc)))
        handlers: dict[str, Callable[..., Any]] = {}
        for seq, (op, event) in enumerate(ops):
            start = len(probe.log)
            if op == "on":
                handlers[f"{event}{seq}"] = ee.on(event, probe.handler(f"{event}{seq}", fail_on=seq + 2))
            elif op == "on_async" and use_async:
                ee.on(event, probe.handler(f"{event}{seq}", fail_on=seq + 2, is_async=True))
            elif op == "once":
                ee.once(event, probe.handler(f"{event}{seq}"))
            elif op == "remove" and ee.listeners(event):
                ee.remove_listener(event, ee.listeners(event)[0])
            elif op == "emit":
                had_handlers = bool(ee.listeners(event))
                try:
                    outcome: tuple[Any, ...] = ("returned", ee.emit(event, seq))
                except Exception as exc:
                    outcome = ("raised", type(exc).__name__, str(exc))
                if use_async:
                    await ee.wait_for_complete()
                    await asyncio.sleep(0)
                ran = probe.log[start:]
                for key, n in (("published", 1), ("processed", int(had_handlers))):
                    expected[key][event] = expected[key].get(event, 0) + n
                expected["errors"][event] = expected["errors"].get(event, 0) + sum(1 for *_, failed in ran if failed)
                trace.append((seq, outcome, ran, list(errors)))
            trace.append((seq, op, sorted(ee.event_names()), {e: len(ee.listeners(e)) for e in ee.event_names()}))
        expected["subscribers"] = {e: len(ee.listeners(e)) for e in ee.event_names()}

    asyncio.run(main())
    return trace, expected


_example = itertools.count()
OPS = st.tuples(
    st.sampled_from(["on", "on_async", "once", "remove", "emit", "emit", "emit"]), st.sampled_from(["a", "b"])
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, max_size=20), use_async=st.booleans())
@example(
    ops=[("on", "a"), ("on_async", "a"), ("emit", "a"), ("emit", "a"), ("emit", "a"), ("emit", "b")], use_async=True
)
@example(ops=[("on", "a"), ("once", "a"), ("emit", "a"), ("emit", "a"), ("emit", "a")], use_async=False)
def test_pyee_behaves_identically_and_metrics_match_its_handlers(ops: list[tuple[str, str]], use_async: bool) -> None:
    gc.collect()
    plain_trace, _ = run_ops(ops, use_async)
    metrics = make_metrics(with_views=True)
    inst = TradingInstrumentor()
    inst.instrument(meter_provider=metrics.provider, config={})
    try:
        traced, expected = run_ops(ops, use_async)
        observed = {
            "published": {e: v for e in "ab" if (v := bus(metrics, e)[0])},
            "processed": {e: v for e in "ab" if (v := bus(metrics, e)[1])},
            "errors": {e: v for e in "ab" if (v := bus(metrics, e)[2])},
        }
    finally:
        inst.uninstrument()
        metrics.provider.shutdown()
    assert traced == plain_trace
    assert observed == {key: {e: n for e, n in expected[key].items() if n} for key in observed}
