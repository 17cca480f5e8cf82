"""pyee under ``TradingInstrumentor``: what only pyee does.

The contract every library keeps (emits that succeed or whose handler fails, on the base and the
asyncio emitter; subscribers; uninstrument, signatures, threads, behaviour unchanged) is in
``test_instrumentation_contract.py``. Here: a series per event name, pyee's own events, queues,
coroutine handlers processed when their tasks end (and when they are cancelled), the executor,
``uplift``, emitters that run their handlers elsewhere (Trio, Twisted, an app's own), a release of
another shape, and pickling.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import logging
import pickle
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyee
import pytest
from pyee.asyncio import AsyncIOEventEmitter
from pyee.executor import ExecutorEventEmitter
from pyee.uplift import unwrap, uplift

from otel_trading.instrumentation import TradingInstrumentor
from otel_trading.metric_contract import METRICS_BY_KEY

from ..conftest import Metrics

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}

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


def test_the_base_emitter_has_no_queue_to_report(instrumented: Metrics) -> None:
    ee = pyee.EventEmitter()
    ee.on("tick", lambda: None)
    ee.emit("tick")
    assert instrumented.points(N["bus_queue_size"]) == []


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


# -- what pyee cannot tell ---------------------------------------------------------------------------


def test_an_emitter_pickles_and_unpickles_as_without_the_instrumentation(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    def pickled() -> tuple[Any, ...]:
        ee = pyee.EventEmitter()
        ee.on("tick", print)
        clone = pickle.loads(pickle.dumps(ee))
        return (sorted(vars(ee)), sorted(vars(clone)), clone.listeners("tick") == [print])

    plain = pickled()
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert pickled() == plain


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
