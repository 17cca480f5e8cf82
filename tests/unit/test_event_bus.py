"""EventBus behaviour: routing, handler isolation, backpressure, draining on stop."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_trading import EventBus, EventBusStoppedError


@dataclass
class Event:
    n: int = 0


@dataclass
class Tick(Event):
    pass


@dataclass
class Fill(Event):
    pass


BusFactory = Callable[..., EventBus]


@pytest.fixture(params=["unmetered", "metered"])
def bus(request: pytest.FixtureRequest) -> Iterator[BusFactory]:
    """Every behaviour holds on both delivery loops: without metrics, and recording into a provider."""
    if request.param == "unmetered":
        yield lambda **kwargs: EventBus(metrics_enabled=False, **kwargs)
        return
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    yield lambda **kwargs: EventBus(meter_provider=provider, **kwargs)
    provider.shutdown()


async def test_events_are_routed_by_type(bus: BusFactory) -> None:
    ticks: list[int] = []
    fills: list[int] = []
    async with bus() as b:
        b.subscribe(Tick, lambda e: ticks.append(e.n))
        b.subscribe(Fill, lambda e: fills.append(e.n))
        await b.publish(Tick(1))
        await b.publish(Fill(2))
        await b.publish(Tick(3))
    assert ticks == [1, 3]
    assert fills == [2]


async def test_a_base_class_subscription_receives_subclass_events(bus: BusFactory) -> None:
    seen: list[str] = []
    async with bus() as b:
        b.subscribe(Event, lambda e: seen.append(type(e).__name__))
        await b.publish(Tick())
        await b.publish(Fill())
    assert seen == ["Tick", "Fill"]


async def test_sync_and_async_handlers_both_run_in_subscription_order(bus: BusFactory) -> None:
    order: list[str] = []

    async def first(_: Tick) -> None:
        await asyncio.sleep(0)
        order.append("async")

    async with bus() as b:
        b.subscribe(Tick, first)
        b.subscribe(Tick, lambda e: order.append("sync"))
        await b.publish(Tick())
    assert order == ["async", "sync"]


async def test_unsubscribe_stops_delivery(bus: BusFactory) -> None:
    seen: list[int] = []
    async with bus() as b:
        sub = b.subscribe(Tick, lambda e: seen.append(e.n))
        await b.publish(Tick(1))
        await asyncio.sleep(0.01)
        sub.unsubscribe()
        await b.publish(Tick(2))
    assert seen == [1]
    assert not sub.active


async def test_a_raising_handler_does_not_stop_siblings_or_later_events(bus: BusFactory) -> None:
    seen: list[int] = []

    def broken(_: Tick) -> None:
        raise RuntimeError("handler bug")

    async with bus() as b:
        b.subscribe(Tick, broken)
        b.subscribe(Tick, lambda e: seen.append(e.n))
        for i in range(3):
            await b.publish(Tick(i))
    assert seen == [0, 1, 2]


async def test_stop_drains_everything_published_before_it(bus: BusFactory) -> None:
    seen: list[int] = []

    async def slow(e: Tick) -> None:
        await asyncio.sleep(0.001)
        seen.append(e.n)

    b = bus()
    b.subscribe(Tick, slow)
    await b.start()
    for i in range(50):
        await b.publish(Tick(i))
    await b.stop()
    assert seen == list(range(50))


async def test_events_published_before_start_are_delivered_after_start(bus: BusFactory) -> None:
    seen: list[int] = []
    b = bus()
    b.subscribe(Tick, lambda e: seen.append(e.n))
    await b.publish(Tick(1))
    async with b:
        pass
    assert seen == [1]


async def test_publish_waits_for_room_when_the_queue_is_full(bus: BusFactory) -> None:
    b = bus(max_queue_size=2)
    await b.publish(Tick(1))
    await b.publish(Tick(2))
    blocked = asyncio.ensure_future(b.publish(Tick(3)))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    await b.start()
    await asyncio.wait_for(blocked, 2)
    await b.stop()
    assert b.queue_size == 0


async def test_publish_nowait_raises_queue_full_instead_of_waiting(bus: BusFactory) -> None:
    b = bus(max_queue_size=1)
    b.publish_nowait(Tick(1))
    with pytest.raises(asyncio.QueueFull):
        b.publish_nowait(Tick(2))


async def test_publishing_to_a_stopped_bus_is_an_error(bus: BusFactory) -> None:
    b = bus()
    await b.start()
    await b.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        await b.publish(Tick())


async def test_publish_threadsafe_delivers_from_another_thread(bus: BusFactory) -> None:
    seen: list[int] = []
    async with bus() as b:
        b.subscribe(Tick, lambda e: seen.append(e.n))
        t = threading.Thread(target=lambda: [b.publish_threadsafe(Tick(i)) for i in range(10)])
        t.start()
        t.join(5)
        for _ in range(100):
            if len(seen) == 10:
                break
            await asyncio.sleep(0.01)
    assert sorted(seen) == list(range(10))


async def test_subscribe_rejects_non_classes_and_non_callables(bus: BusFactory) -> None:
    b = bus()
    with pytest.raises(TypeError, match="event_type"):
        b.subscribe("Tick", lambda e: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="handler"):
        b.subscribe(Tick, "nope")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [
        ({"max_queue_size": 0}, ValueError, "max_queue_size"),
        ({"max_queue_size": "10"}, TypeError, "max_queue_size"),
        ({"name": ""}, ValueError, "name"),
        ({"sample_rate": -0.1}, ValueError, "sample_rate"),
        ({"drain_timeout": 0}, ValueError, "drain_timeout"),
        ({"drain_timeout": "10"}, TypeError, "drain_timeout"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], exc: type[Exception], needle: str) -> None:
    with pytest.raises(exc, match=needle):
        EventBus(**kwargs)  # type: ignore[arg-type]


# -- stop(): the drain ---------------------------------------------------------------------------------


@dataclass
class Order(Event):
    pass


async def test_follow_ups_published_by_handlers_while_stop_drains_are_delivered(
    bus: BusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The order handler: it awaits the venue, then publishes the fill. Old design: 0 of 3
    # fills delivered, each a RuntimeError("event bus 'default' is stopped") counted as a handler error.
    fills: list[int] = []

    async with bus() as b:

        async def on_order(order: Order) -> None:
            await asyncio.sleep(0.01)
            await b.publish(Fill(order.n))

        b.subscribe(Order, on_order)
        b.subscribe(Fill, lambda e: fills.append(e.n))
        for i in range(3):
            await b.publish(Order(i))
    assert fills == [0, 1, 2]
    assert b.dropped == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_chains_of_follow_ups_are_delivered_and_publish_raises_once_stop_returns(bus: BusFactory) -> None:
    seen: list[int] = []
    b = bus(max_queue_size=2)

    async def relay(e: Tick) -> None:
        seen.append(e.n)
        await asyncio.sleep(0)
        if e.n < 20:
            await b.publish(Tick(e.n + 1))  # a queue of 2: waits for room behind the stop marker too

    def sync_relay(e: Fill) -> None:
        if e.n < 5:
            b.publish_nowait(Fill(e.n + 1))

    b.subscribe(Tick, relay)
    b.subscribe(Fill, sync_relay)
    await b.start()
    await b.publish(Tick(0))
    await b.publish(Fill(0))
    await b.stop()
    assert seen == list(range(21))
    with pytest.raises(EventBusStoppedError, match="stopped"):
        await b.publish(Tick(99))
    with pytest.raises(RuntimeError, match="stopped"):
        b.publish_nowait(Tick(99))
    assert b.dropped == 2


async def test_publishers_waiting_for_room_when_stop_is_called_are_delivered(bus: BusFactory) -> None:
    seen: list[int] = []
    gate = asyncio.Event()
    b = bus(max_queue_size=1)

    async def slow(e: Tick) -> None:
        await gate.wait()
        seen.append(e.n)

    b.subscribe(Tick, slow)
    await b.start()
    await b.publish(Tick(0))  # the worker takes it and waits at the gate
    await asyncio.sleep(0.01)
    await b.publish(Tick(1))  # fills the queue
    waiting = [asyncio.create_task(b.publish(Tick(n))) for n in (2, 3)]
    await asyncio.sleep(0.01)
    stopping = asyncio.create_task(b.stop())
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.wait_for(stopping, 5)
    await asyncio.gather(*waiting)
    assert seen == [0, 1, 2, 3]
    assert b.dropped == 0


async def test_a_drain_that_never_ends_is_bounded_by_the_timeout(
    bus: BusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    b = bus()
    delivered = [0]

    async def forever(e: Tick) -> None:
        delivered[0] += 1
        await asyncio.sleep(0.001)
        await b.publish(Tick(e.n + 1))
        await b.publish(Tick(e.n + 1))  # the queue only grows

    b.subscribe(Tick, forever)
    await b.start()
    await b.publish(Tick(0))
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="otel_trading.event_bus"):
        await b.stop(timeout=0.2)
    assert time.monotonic() - started < 2
    assert delivered[0] > 1
    assert b.dropped > 0
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "gave up after 0.2 s" in record.getMessage()
    assert f"{b.dropped} undelivered event(s) dropped (Tick: {b.dropped})" in record.getMessage()
    assert not b.running
    with pytest.raises(EventBusStoppedError):
        await b.publish(Tick(0))


async def test_a_stuck_handler_is_cancelled_when_the_drain_times_out(bus: BusFactory) -> None:
    cancelled = asyncio.Event()
    b = bus(drain_timeout=0.1)

    async def stuck(_: Tick) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    b.subscribe(Tick, stuck)
    await b.start()
    await b.publish(Tick(1))
    await b.publish(Tick(2))
    await asyncio.sleep(0.01)
    await asyncio.wait_for(b.stop(), 5)  # the bus's drain_timeout applies
    assert cancelled.is_set()
    assert b.dropped == 1  # Tick(2) never started


async def test_publishers_still_waiting_when_the_drain_times_out_are_refused(bus: BusFactory) -> None:
    b = bus(max_queue_size=1)

    async def stuck(_: Tick) -> None:
        await asyncio.Event().wait()

    b.subscribe(Tick, stuck)
    await b.start()
    await b.publish(Tick(0))
    await asyncio.sleep(0.01)
    await b.publish(Tick(1))
    waiting = asyncio.create_task(b.publish(Tick(2)))
    await asyncio.sleep(0.01)
    await b.stop(timeout=0.05)
    with pytest.raises(EventBusStoppedError, match="before the event got a place"):
        await asyncio.wait_for(waiting, 5)
    assert b.dropped == 2  # Tick(1) queued, Tick(2) waiting


async def test_stop_of_a_bus_never_started_delivers_what_was_published(bus: BusFactory) -> None:
    seen: list[int] = []
    b = bus()
    b.subscribe(Tick, lambda e: seen.append(e.n))
    await b.publish(Tick(1))
    await b.stop()
    assert seen == [1]
    assert not b.running


async def test_concurrent_stops_wait_for_the_same_drain(bus: BusFactory) -> None:
    seen: list[int] = []

    async def slow(e: Tick) -> None:
        await asyncio.sleep(0.005)
        seen.append(e.n)

    b = bus()
    b.subscribe(Tick, slow)
    await b.start()
    for i in range(5):
        await b.publish(Tick(i))
    await asyncio.gather(b.stop(), b.stop())
    assert seen == list(range(5))


async def test_a_bus_restarts_after_stop(bus: BusFactory) -> None:
    seen: list[int] = []
    b = bus(drain_timeout=math.inf)
    b.subscribe(Tick, lambda e: seen.append(e.n))
    async with b:
        await b.publish(Tick(1))
    async with b:
        await b.publish(Tick(2))
    assert seen == [1, 2]


async def test_publish_threadsafe_to_a_stopped_bus_is_logged_and_counted(
    bus: BusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    b = bus()
    await b.start()
    await b.stop()
    with caplog.at_level(logging.WARNING, logger="otel_trading.event_bus"):
        t = threading.Thread(target=lambda: b.publish_threadsafe(Tick(1)))
        t.start()
        t.join(5)
        for _ in range(100):
            if b.dropped:
                break
            await asyncio.sleep(0.01)
    assert b.dropped == 1
    assert any("is stopped" in r.getMessage() and "Tick refused" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"timeout": -1.0}, {"timeout": "1"}])
async def test_stop_timeout_is_checked(bus: BusFactory, kwargs: dict[str, object]) -> None:
    b = bus()
    with pytest.raises((TypeError, ValueError), match="timeout"):
        await b.stop(**kwargs)  # type: ignore[arg-type]


# -- bad events ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [Tick, None], ids=["a class", "None"])
async def test_publishing_a_class_or_none_is_a_type_error(bus: BusFactory, bad: object) -> None:
    # Old design: accepted, no subscriber ran, and series appeared with event_type="type"/"NoneType".
    seen: list[object] = []
    async with bus() as b:
        b.subscribe(Tick, seen.append)
        b.subscribe(object, seen.append)
        await b.publish(Tick(1))  # the one-entry cache holds Tick's row: the bad event must not slip by
        with pytest.raises(TypeError, match="event must be"):
            await b.publish(bad)
        with pytest.raises(TypeError, match="event must be"):
            b.publish_nowait(bad)
        with pytest.raises(TypeError, match="event must be"):
            await asyncio.to_thread(b.publish_threadsafe, bad)
        assert b.queue_size == 0
    assert seen == [Tick(1), Tick(1)]
    if bad is Tick:
        with pytest.raises(TypeError, match=r"publish Tick\(\.\.\.\)"):
            EventBus(metrics_enabled=False).publish_nowait(Tick)
