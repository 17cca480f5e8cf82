"""What the breaker and the bus record, read back through an in-memory OTel reader.

Every test runs twice (``metrics`` fixture): with otel-trading's views (the fast histogram bridge)
and on a plain MeterProvider (direct SDK histograms). Both must report the same data.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum

from otel_trading import CircuitBreaker, CircuitOpenError, EventBus
from otel_trading.metric_contract import DURATION_BUCKETS, METRICS_BY_KEY

from ..conftest import Metrics

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}


class Boom(Exception):
    pass


def _fail() -> None:
    raise Boom()


@dataclass
class Tick:
    price: float


@dataclass
class OrderFilled:
    qty: float


def run_breaker(cb: CircuitBreaker, successes: int, failures: int) -> None:
    for _ in range(successes):
        cb.call(lambda: None)
    for _ in range(failures):
        with pytest.raises(Boom):
            cb.call(_fail)


def test_successes_and_failures_are_counted_per_breaker(metrics: Metrics) -> None:
    cb = CircuitBreaker(name="binance", failure_threshold=3, meter_provider=metrics.provider)
    run_breaker(cb, 5, 3)
    assert metrics.value(N["breaker_successes"], name="binance") == 5
    assert metrics.value(N["breaker_failures"], name="binance") == 3


def test_latency_histogram_times_successes_and_failures(metrics: Metrics) -> None:
    cb = CircuitBreaker(name="binance", failure_threshold=3, meter_provider=metrics.provider)
    run_breaker(cb, 5, 3)
    point = metrics.histogram(N["breaker_latency"], name="binance")
    assert point is not None
    assert point.count == 8
    assert sum(point.bucket_counts) == 8
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS
    assert 0 < point.sum < 1.0


def test_state_gauge_reports_open_as_1(metrics: Metrics) -> None:
    cb = CircuitBreaker(name="kraken", failure_threshold=3, meter_provider=metrics.provider)
    run_breaker(cb, 0, 3)
    assert metrics.value(N["breaker_state"], name="kraken") == 1


def test_transitions_are_labelled_with_from_and_to_state(metrics: Metrics) -> None:
    clock = [0.0]
    cb = CircuitBreaker(
        name="kraken", failure_threshold=1, recovery_timeout=5, meter_provider=metrics.provider, clock=lambda: clock[0]
    )
    run_breaker(cb, 0, 1)
    clock[0] += 5
    cb.call(lambda: None)
    assert metrics.value(N["breaker_transitions"], name="kraken", from_state="closed", to_state="open") == 1
    assert metrics.value(N["breaker_transitions"], name="kraken", from_state="open", to_state="half_open") == 1
    assert metrics.value(N["breaker_transitions"], name="kraken", from_state="half_open", to_state="closed") == 1


def test_rejected_calls_are_counted_but_not_timed_or_failed(metrics: Metrics) -> None:
    cb = CircuitBreaker(name="kraken", failure_threshold=1, meter_provider=metrics.provider)
    run_breaker(cb, 0, 1)
    for _ in range(4):
        with pytest.raises(CircuitOpenError):
            cb.call(lambda: None)
    assert metrics.value(N["breaker_rejected"], name="kraken") == 4
    assert metrics.value(N["breaker_failures"], name="kraken") == 1
    point = metrics.histogram(N["breaker_latency"], name="kraken")
    assert point is not None and point.count == 1


def test_metrics_disabled_breaker_produces_no_series(metrics: Metrics) -> None:
    cb = CircuitBreaker(name="quiet", metrics_enabled=False, meter_provider=metrics.provider)
    run_breaker(cb, 3, 1)
    for name in (N["breaker_successes"], N["breaker_failures"], N["breaker_state"], N["breaker_latency"]):
        assert all(dict(p.attributes).get("name") != "quiet" for p in metrics.points(name))


def test_instrument_types_are_counters_gauges_and_histograms(metrics: Metrics) -> None:
    cb = CircuitBreaker(name="types", meter_provider=metrics.provider)
    run_breaker(cb, 1, 1)
    collected = metrics.collect()
    assert isinstance(collected[N["breaker_successes"]].data, Sum)
    assert collected[N["breaker_successes"]].data.is_monotonic
    assert isinstance(collected[N["breaker_state"]].data, Gauge)
    assert isinstance(collected[N["breaker_latency"]].data, Histogram)
    assert collected[N["breaker_latency"]].unit == "s"


def test_cumulative_counts_keep_growing_across_collections(metrics: Metrics) -> None:
    cb = CircuitBreaker(name="grow", meter_provider=metrics.provider)
    run_breaker(cb, 2, 0)
    assert metrics.value(N["breaker_successes"], name="grow") == 2
    run_breaker(cb, 3, 0)
    assert metrics.value(N["breaker_successes"], name="grow") == 5
    point = metrics.histogram(N["breaker_latency"], name="grow")
    assert point is not None and point.count == 5


@pytest.mark.parametrize("sample_rate", [1.0, 0.0], ids=["timed", "untimed"])
async def test_an_event_is_processed_only_once_its_handlers_have_run(metrics: Metrics, sample_rate: float) -> None:
    seen_while_handling: list[float | None] = []

    async with EventBus(meter_provider=metrics.provider, sample_rate=sample_rate) as bus:
        bus.subscribe(Tick, lambda e: seen_while_handling.append(metrics.value(N["bus_processed"], event_type="Tick")))
        await bus.publish(Tick(1.0))
    assert seen_while_handling in ([0], [None])
    assert metrics.value(N["bus_processed"], event_type="Tick") == 1


async def test_bus_counts_published_and_processed_per_event_type(metrics: Metrics) -> None:
    async with EventBus(meter_provider=metrics.provider) as bus:
        bus.subscribe(Tick, lambda e: None)
        for i in range(7):
            await bus.publish(Tick(float(i)))
        await bus.publish(OrderFilled(1.0))
    assert metrics.value(N["bus_published"], event_type="Tick") == 7
    assert metrics.value(N["bus_processed"], event_type="Tick") == 7
    assert metrics.value(N["bus_published"], event_type="OrderFilled") == 1


async def test_bus_processing_duration_histogram_counts_each_event(metrics: Metrics) -> None:
    async with EventBus(meter_provider=metrics.provider) as bus:

        async def slow(_: Tick) -> None:
            await asyncio.sleep(0.002)

        bus.subscribe(Tick, slow)
        for i in range(4):
            await bus.publish(Tick(float(i)))
    point = metrics.histogram(N["bus_processing_duration"], event_type="Tick")
    assert point is not None
    assert point.count == 4
    assert point.sum >= 4 * 0.002
    assert point.min >= 0.002


async def test_subscriber_gauge_follows_subscribe_and_unsubscribe(metrics: Metrics) -> None:
    bus = EventBus(meter_provider=metrics.provider)
    unsubscribe = bus.subscribe(Tick, lambda e: None)
    bus.subscribe(Tick, lambda e: None)
    assert metrics.value(N["bus_subscribers"], event_type="Tick") == 2
    unsubscribe()
    assert metrics.value(N["bus_subscribers"], event_type="Tick") == 1


async def test_queue_size_gauge_reports_pending_events_per_bus(metrics: Metrics) -> None:
    bus = EventBus(name="md", meter_provider=metrics.provider)
    for i in range(5):
        await bus.publish(Tick(float(i)))
    assert metrics.value(N["bus_queue_size"], bus="md") == 5
    await bus.start()
    await bus.stop()
    assert metrics.value(N["bus_queue_size"], bus="md") == 0


async def test_handler_errors_are_counted_and_the_event_still_processed(metrics: Metrics) -> None:
    async with EventBus(meter_provider=metrics.provider) as bus:

        def broken(_: Tick) -> None:
            raise ValueError("bad tick")

        bus.subscribe(Tick, broken)
        await bus.publish(Tick(1.0))
        await bus.publish(Tick(2.0))
    assert metrics.value(N["bus_handler_errors"], event_type="Tick") == 2
    assert metrics.value(N["bus_processed"], event_type="Tick") == 2


async def test_metrics_disabled_bus_produces_no_series(metrics: Metrics) -> None:
    async with EventBus(metrics_enabled=False, meter_provider=metrics.provider) as bus:
        bus.subscribe(Tick, lambda e: None)
        await bus.publish(Tick(1.0))
    assert metrics.points(N["bus_published"]) == []
    assert metrics.points(N["bus_processing_duration"]) == []
    assert metrics.points(N["bus_queue_size"]) == []


def test_components_without_a_provider_report_to_the_global_one(global_metrics: Metrics) -> None:
    cb = CircuitBreaker(name="global")
    run_breaker(cb, 2, 0)
    assert global_metrics.value(N["breaker_successes"], name="global") == 2
    point = global_metrics.histogram(N["breaker_latency"], name="global")
    assert point is not None and point.count == 2


def test_breakers_sharing_a_name_share_counters_and_report_the_worst_state(metrics: Metrics) -> None:
    a = CircuitBreaker(name="dup", failure_threshold=1, meter_provider=metrics.provider)
    b = CircuitBreaker(name="dup", failure_threshold=1, meter_provider=metrics.provider)
    run_breaker(a, 2, 0)
    run_breaker(b, 1, 1)
    assert metrics.value(N["breaker_successes"], name="dup") == 3
    assert metrics.value(N["breaker_state"], name="dup") == 1


async def test_a_handler_raising_cancelled_error_is_counted_and_the_bus_goes_on(metrics: Metrics) -> None:
    seen: list[float] = []

    async def cancelled(_: Tick) -> None:
        raise asyncio.CancelledError()

    async with EventBus(meter_provider=metrics.provider) as bus:
        bus.subscribe(Tick, cancelled)
        bus.subscribe(Tick, lambda e: seen.append(e.price))
        await bus.publish(Tick(1.0))
        await bus.publish(Tick(2.0))
    assert seen == [1.0, 2.0]
    assert metrics.value(N["bus_handler_errors"], event_type="Tick") == 2
