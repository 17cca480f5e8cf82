"""Event-loop lag: a handler that blocks the loop shows up, the timer is shared, cheap and switchable."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint

from otel_trading import EventBus, LoopMonitor, monitor_event_loop
from otel_trading import loop_monitor as loop_monitor_module
from otel_trading.metric_contract import LOOP_LAG, LOOP_LAG_BUCKETS, MetricGroup
from otel_trading.recording import registry_for
from otel_trading.settings import OTEL_TRADING_DISABLED_METRICS

from ..conftest import Metrics, make_metrics

LAG = LOOP_LAG.otel_name
BLOCK = 0.3


@dataclass
class Tick:
    n: int = 0


def _lag(metrics: Metrics, loop: str = "MainThread") -> HistogramDataPoint | None:
    return metrics.histogram(LAG, loop=loop)


def _above(point: HistogramDataPoint, seconds: float) -> int:
    """Observations in the buckets above the boundary ``seconds``."""
    index = list(point.explicit_bounds).index(seconds)
    return sum(point.bucket_counts[index + 1 :])


async def test_a_handler_blocking_the_loop_for_300_ms_shows_up_as_a_300_ms_lag(metrics: Metrics) -> None:
    # Every histogram path (rows served to the reader, and the SDK Histogram fallback) gets it.
    def blocking(tick: Tick) -> None:
        time.sleep(BLOCK)  # a synchronous HTTP call, say

    async with EventBus(meter_provider=metrics.provider) as bus:
        bus.subscribe(Tick, blocking)
        await asyncio.sleep(0.1)  # some ordinary probes first
        await bus.publish(Tick())
        await asyncio.sleep(0.1)
    point = _lag(metrics)
    assert point is not None
    assert tuple(point.explicit_bounds) == LOOP_LAG_BUCKETS
    # The stall is resolved to the monitor's interval: one observation in (0.3 - interval, 0.3 + slack].
    assert point.max >= BLOCK - loop_monitor_module.DEFAULT_INTERVAL
    assert _above(point, 0.25) >= 1  # one per stall (more only if this machine stalled the process too)
    assert point.count >= 5  # the probes before and after the stall
    assert point.count - _above(point, 0.1) >= 4  # ... which found the loop responsive


async def test_monitor_event_loop_resolves_a_stall_to_its_interval(metrics: Metrics) -> None:
    with monitor_event_loop(meter_provider=metrics.provider, interval=0.005) as monitor:
        assert monitor.running and monitor.name == "MainThread" and monitor.interval == 0.005
        await asyncio.sleep(0.05)
        time.sleep(BLOCK)
        await asyncio.sleep(0.05)
    assert not monitor.running
    point = _lag(metrics)
    assert point is not None
    assert BLOCK - 0.005 <= point.max < BLOCK + 0.2
    assert _above(point, 0.25) >= 1


async def test_buses_on_one_loop_share_one_timer_which_stops_with_the_last(metrics: Metrics) -> None:
    loop = asyncio.get_running_loop()
    first = EventBus(name="a", meter_provider=metrics.provider)
    second = EventBus(name="b", meter_provider=metrics.provider)
    await first.start()
    await second.start()
    probes = list(loop_monitor_module._probes[loop].values())
    assert len(probes) == 1 and probes[0].users == 2
    await first.stop()
    assert probes[0].users == 1 and probes[0]._handle is not None
    await second.stop()
    assert probes[0]._halted and probes[0]._handle is None
    assert not loop_monitor_module._probes[loop]
    # Stopped means stopped: no observation after the last stop().
    before = _lag(metrics)
    await asyncio.sleep(0.1)
    after = _lag(metrics)
    assert (before.count if before else 0) == (after.count if after else 0)


async def test_the_first_monitor_of_a_loop_sets_its_name_and_interval(metrics: Metrics) -> None:
    started = time.monotonic()
    mine = monitor_event_loop(meter_provider=metrics.provider, name="strategy", interval=0.05)
    async with EventBus(meter_provider=metrics.provider):
        await asyncio.sleep(0.15)
    assert mine.running  # the bus released only its own handle
    mine.stop()
    elapsed = time.monotonic() - started
    assert _lag(metrics, "MainThread") is None
    point = _lag(metrics, "strategy")
    # Every 50 ms, not the default 20 ms (which would give at least elapsed / 0.02 - 1 probes).
    assert point is not None and 1 <= point.count <= elapsed / 0.05 + 1


async def test_the_timer_is_no_task(metrics: Metrics) -> None:
    tasks = asyncio.all_tasks()
    with monitor_event_loop(meter_provider=metrics.provider):
        await asyncio.sleep(0.05)
        assert asyncio.all_tasks() == tasks


def test_a_loop_in_another_thread_is_monitored_and_stopped_from_this_one() -> None:
    metrics = make_metrics(True)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="feed-loop", daemon=True)
    thread.start()
    try:
        monitor = monitor_event_loop(loop, meter_provider=metrics.provider, interval=0.005)
        assert monitor.name == "feed-loop"  # the thread running the loop, not this one
        time.sleep(0.05)
        loop.call_soon_threadsafe(time.sleep, BLOCK)
        time.sleep(BLOCK + 0.05)
        monitor.stop()
        time.sleep(0.02)  # the cancellation runs on the loop's thread
        point = _lag(metrics, "feed-loop")
        assert point is not None and point.max >= BLOCK - 0.005
        count = point.count
        time.sleep(0.05)
        assert _lag(metrics, "feed-loop").count == count  # type: ignore[union-attr]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        metrics.provider.shutdown()


def test_a_monitor_of_a_loop_that_is_not_running_yet_starts_with_it() -> None:
    metrics = make_metrics(True)
    loop = asyncio.new_event_loop()
    try:
        monitor = monitor_event_loop(loop, meter_provider=metrics.provider, name="later", interval=0.005)
        assert monitor.running and _lag(metrics, "later") is None
        loop.run_until_complete(asyncio.sleep(0.05))
        monitor.stop()
        loop.run_until_complete(asyncio.sleep(0))
        point = _lag(metrics, "later")
        assert point is not None and point.count >= 3
    finally:
        loop.close()
        metrics.provider.shutdown()


async def test_disabling_the_event_loop_group_keeps_the_bus_and_records_no_lag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(OTEL_TRADING_DISABLED_METRICS, MetricGroup.EVENT_LOOP.value)
    metrics = make_metrics(True)
    seen: list[Tick] = []
    async with EventBus(meter_provider=metrics.provider) as bus:
        bus.subscribe(Tick, seen.append)
        await bus.publish(Tick())
        await asyncio.sleep(0.05)
        assert bus._loop_monitor is None
    monitor = monitor_event_loop(meter_provider=metrics.provider)
    assert not monitor.running
    monitor.stop()
    assert seen and LAG not in metrics.collect()
    assert registry_for(metrics.provider).loop_series == {}
    assert asyncio.get_running_loop() not in loop_monitor_module._probes
    metrics.provider.shutdown()


async def test_disabling_the_event_bus_group_still_monitors_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OTEL_TRADING_DISABLED_METRICS, f"{MetricGroup.EVENT_BUS.value}")
    metrics = make_metrics(True)
    async with EventBus(meter_provider=metrics.provider):
        await asyncio.sleep(0.07)
    names = set(metrics.collect())
    assert LAG in names and not {n for n in names if n.startswith("event_bus.")}
    metrics.provider.shutdown()


async def test_a_bus_with_metrics_off_monitors_nothing(metrics: Metrics) -> None:
    async with EventBus(metrics_enabled=False) as bus:
        await asyncio.sleep(0.05)
        assert bus._loop_monitor is None
    assert asyncio.get_running_loop() not in loop_monitor_module._probes


async def test_bad_arguments_are_refused_with_their_name(metrics: Metrics) -> None:
    provider = metrics.provider
    with pytest.raises(ValueError, match="interval"):
        monitor_event_loop(meter_provider=provider, interval=0)
    with pytest.raises(ValueError, match="interval"):
        monitor_event_loop(meter_provider=provider, interval=61)
    with pytest.raises(TypeError, match="interval"):
        monitor_event_loop(meter_provider=provider, interval="0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        monitor_event_loop(meter_provider=provider, name=" ")
    with pytest.raises(TypeError, match="loop"):
        monitor_event_loop("main", meter_provider=provider)  # type: ignore[arg-type]


def test_without_a_running_loop_the_error_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match="loop="):
        monitor_event_loop()


def test_stop_is_idempotent_and_a_handle_says_what_it_monitors() -> None:
    metrics = make_metrics(True)
    loop = asyncio.new_event_loop()
    try:
        monitor = monitor_event_loop(loop, meter_provider=metrics.provider, name="x", interval=0.5)
        assert isinstance(monitor, LoopMonitor)
        assert repr(monitor) == "LoopMonitor(name='x', interval=0.5, running=True)"
        monitor.stop()
        monitor.stop()
        assert not monitor.running
    finally:
        loop.close()
        metrics.provider.shutdown()


def test_lag_recorded_before_the_global_provider_is_set_is_kept_without_a_pending_list() -> None:
    from opentelemetry import metrics as otel_metrics

    async def run() -> EventBus:
        bus = EventBus()  # no provider: the global one, set later
        await bus.start()
        await asyncio.sleep(0.1)
        await bus.stop()
        return bus

    bus = asyncio.run(run())
    registry = registry_for(None)
    series = registry.loop_series["MainThread"]
    assert series._pending == []  # 50 values a second are not kept for a fallback that may never come
    metrics = make_metrics(True)
    otel_metrics.set_meter_provider(metrics.provider)
    point = _lag(metrics)
    assert point is not None and point.count >= 3
    del bus
    metrics.provider.shutdown()


def test_the_lag_is_declared_in_the_contract_with_buckets_from_1_ms_to_10_s() -> None:
    assert (LOOP_LAG.prometheus_name, LOOP_LAG.unit, LOOP_LAG.labels) == (
        "otel_trading_event_loop_lag_seconds",
        "s",
        ("loop",),
    )
    assert LOOP_LAG.group is MetricGroup.EVENT_LOOP and not LOOP_LAG.documented_in_guide
    assert list(LOOP_LAG_BUCKETS) == sorted(set(LOOP_LAG_BUCKETS))
    assert (LOOP_LAG_BUCKETS[0], LOOP_LAG_BUCKETS[-1]) == (0.001, 10)
    # 0.1: the stall boundary of the alert, top and doctor; 0.25: a 300 ms stall always lands above it.
    assert {0.1, 0.25} <= set(LOOP_LAG_BUCKETS)
    # Whole seconds as ints, so that both export paths write le="1", as for the durations.
    assert all(isinstance(b, int) for b in LOOP_LAG_BUCKETS if b == int(b))
