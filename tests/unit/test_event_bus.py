"""EventBus behaviour: routing, handler isolation, backpressure, draining on stop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_trading import EventBus


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
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], exc: type[Exception], needle: str) -> None:
    with pytest.raises(exc, match=needle):
        EventBus(**kwargs)  # type: ignore[arg-type]
