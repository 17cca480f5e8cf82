"""What the fast paths must never trade away: exact counts, honest sampling, real disabling, batching
that loses nothing, and a benchmark that still runs. No timing is asserted here (bench/run.py
reports speed; CI runs it once in quick mode below)."""

from __future__ import annotations

import asyncio
import gc
import math
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.metrics import NoOpCounter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_trading import CircuitBreaker, EventBus, views
from otel_trading import batching as batching_module
from otel_trading import event_bus as event_bus_module
from otel_trading.batching import BatchedMetrics
from otel_trading.metric_contract import METRICS_BY_KEY, MetricGroup
from otel_trading.recording import C0, ThreadRows, registry_for, sample_gaps
from otel_trading.settings import OTEL_TRADING_DISABLED_METRICS

from ..conftest import Metrics, assert_binding, make_metrics, run_in_threads

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}

THREADS = 8
CALLS_PER_THREAD = 20_000
TOTAL = THREADS * CALLS_PER_THREAD


class Tick:
    pass


@pytest.fixture
def fast() -> Iterator[Metrics]:
    """A provider whose histograms are served from the rows (the hot path these tests are about)."""
    m = make_metrics(True)
    yield m
    try:
        assert_binding(m.provider, m.path)
    finally:
        m.provider.shutdown()


def _noop() -> None:
    return None


def _binomial_bound(n: int, p: float, sigmas: float = 6.0) -> float:
    """Half-width of a +-6 sigma band: a correct sampler leaves it about once in 500 million runs."""
    return sigmas * math.sqrt(n * p * (1 - p))


def _names(metrics: Metrics) -> set[str]:
    return set(metrics.collect())


# -- exact counts ---------------------------------------------------------------------------------


def test_breaker_counts_exactly_160000_successes_from_8_interleaving_threads(fast: Metrics) -> None:
    cb = CircuitBreaker("exact", meter_provider=fast.provider)
    barrier = threading.Barrier(THREADS)

    def worker() -> None:
        barrier.wait()
        for _ in range(CALLS_PER_THREAD):
            cb.call(_noop)

    # Switch threads every microsecond, so the threads' multi-step row updates really interleave.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        run_in_threads(THREADS, worker)
    finally:
        sys.setswitchinterval(interval)
    assert fast.value(N["breaker_successes"], name="exact") == TOTAL
    point = fast.histogram(N["breaker_latency"], name="exact")
    assert point is not None and point.count == TOTAL and sum(point.bucket_counts) == TOTAL


def test_each_thread_records_into_a_row_of_its_own() -> None:
    rows = ThreadRows()
    seen: list[int] = []
    barrier = threading.Barrier(THREADS)

    def worker() -> None:
        barrier.wait()
        row = rows.row()
        row[C0] += 1
        seen.append(id(row))
        barrier.wait()  # all alive together: no row can be reused by a later thread

    run_in_threads(THREADS, worker)
    assert len(set(seen)) == THREADS
    assert sum(row[C0] for row in rows.rows()) == THREADS


async def test_breaker_counts_exactly_160000_successes_from_8_asyncio_tasks(fast: Metrics) -> None:
    cb = CircuitBreaker("exact-async", meter_provider=fast.provider)

    async def one() -> None:
        return None

    async def task() -> None:
        for i in range(CALLS_PER_THREAD):
            await cb.call_async(one)
            if i % 100 == 0:
                await asyncio.sleep(0)  # interleave the tasks

    await asyncio.gather(*(task() for _ in range(THREADS)))
    assert fast.value(N["breaker_successes"], name="exact-async") == TOTAL
    point = fast.histogram(N["breaker_latency"], name="exact-async")
    assert point is not None and point.count == TOTAL


async def test_bus_counts_exactly_160000_events_from_8_producer_tasks(fast: Metrics) -> None:
    bus = EventBus(meter_provider=fast.provider, max_queue_size=1_000)
    seen = [0]
    bus.subscribe(Tick, lambda e: seen.__setitem__(0, seen[0] + 1))
    await bus.start()

    async def producer() -> None:
        for _ in range(CALLS_PER_THREAD):
            await bus.publish(Tick())

    await asyncio.gather(*(producer() for _ in range(THREADS)))
    await bus.stop()
    assert seen[0] == TOTAL
    assert fast.value(N["bus_published"], event_type="Tick") == TOTAL
    assert fast.value(N["bus_processed"], event_type="Tick") == TOTAL
    point = fast.histogram(N["bus_processing_duration"], event_type="Tick")
    assert point is not None and point.count == TOTAL


def test_a_breaker_collected_while_its_series_lock_is_held_neither_deadlocks_nor_loses_counts(
    fast: Metrics,
) -> None:
    # The garbage collector runs weakref finalizers at any allocation, e.g. inside the series'
    # own locked sections; the finalizer must not wait for that lock.
    keep = CircuitBreaker("gc", meter_provider=fast.provider)
    keep.call(_noop)
    series = keep._series
    assert series is not None

    def collect_a_breaker_under_the_lock() -> None:
        doomed = CircuitBreaker("gc", meter_provider=fast.provider)
        doomed.call(_noop)
        with series._lock:
            del doomed
            gc.collect()

    worker = threading.Thread(target=collect_a_breaker_under_the_lock, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "the finalizer deadlocked on the series lock"
    assert fast.value(N["breaker_successes"], name="gc") == 2


# -- sampling --------------------------------------------------------------------------------------


def test_sample_gaps_average_one_over_the_rate() -> None:
    gap = sample_gaps(0.1)
    assert gap is not None
    draws = 50_000
    gaps = [gap() for _ in range(draws)]
    assert min(gaps) >= 1
    # Geometric(p): mean 1/p, variance (1-p)/p^2.
    sd_of_mean = math.sqrt(0.9 / 0.01 / draws)
    assert abs(sum(gaps) / draws - 10.0) < 6 * sd_of_mean


def test_sample_gaps_is_none_at_rate_one_so_every_event_is_timed() -> None:
    assert sample_gaps(1.0) is None


def test_breaker_sampling_keeps_counters_exact_and_times_about_rate_times_n(fast: Metrics) -> None:
    calls, rate = 40_000, 0.1
    cb = CircuitBreaker("sampled", meter_provider=fast.provider, sample_rate=rate)
    for _ in range(calls):
        cb.call(_noop)
    assert fast.value(N["breaker_successes"], name="sampled") == calls
    point = fast.histogram(N["breaker_latency"], name="sampled")
    assert point is not None
    assert abs(point.count - rate * calls) <= _binomial_bound(calls, rate)


async def test_bus_sampling_keeps_counters_exact_and_times_about_rate_times_n(fast: Metrics) -> None:
    events, rate = 40_000, 0.1
    bus = EventBus(meter_provider=fast.provider, sample_rate=rate)
    bus.subscribe(Tick, lambda e: None)
    await bus.start()
    for _ in range(events):
        await bus.publish(Tick())
    await bus.stop()
    assert fast.value(N["bus_published"], event_type="Tick") == events
    assert fast.value(N["bus_processed"], event_type="Tick") == events
    point = fast.histogram(N["bus_processing_duration"], event_type="Tick")
    assert point is not None
    assert abs(point.count - rate * events) <= _binomial_bound(events, rate)


async def test_bus_sample_rate_zero_keeps_counters_and_never_reads_the_clock(
    fast: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = [0]

    def counting_clock() -> float:
        reads[0] += 1
        return 0.0

    monkeypatch.setattr(event_bus_module, "perf_counter", counting_clock)
    bus = EventBus(meter_provider=fast.provider, sample_rate=0.0)
    bus.subscribe(Tick, lambda e: None)
    await bus.start()
    for _ in range(100):
        await bus.publish(Tick())
    await bus.stop()
    assert reads[0] == 0
    assert fast.value(N["bus_processed"], event_type="Tick") == 100
    assert fast.histogram(N["bus_processing_duration"], event_type="Tick") is None


# -- disabling -------------------------------------------------------------------------------------


def _disabled(monkeypatch: pytest.MonkeyPatch, value: str) -> Metrics:
    monkeypatch.setenv(OTEL_TRADING_DISABLED_METRICS, value)
    return make_metrics(True)


async def _bus_traffic(metrics: Metrics, events: int = 10) -> EventBus:
    bus = EventBus(meter_provider=metrics.provider)
    bus.subscribe(Tick, lambda e: None)
    await bus.start()
    for _ in range(events):
        await bus.publish(Tick())
    await bus.stop()
    return bus


async def test_disabling_the_event_bus_group_removes_every_event_bus_series(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = _disabled(monkeypatch, MetricGroup.EVENT_BUS.value)
    await _bus_traffic(metrics)
    CircuitBreaker("still-on", meter_provider=metrics.provider).call(_noop)
    names = _names(metrics)
    assert not {n for n in names if n.startswith("event_bus.")}
    assert N["breaker_successes"] in names


async def test_disabling_the_event_bus_group_leaves_no_rows_or_series_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = _disabled(monkeypatch, MetricGroup.EVENT_BUS.value)
    bus = await _bus_traffic(metrics)
    registry = registry_for(metrics.provider)
    assert registry.event_series == {}
    assert bus not in set(registry.buses)


def test_disabling_the_circuit_breaker_group_removes_its_series_and_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = _disabled(monkeypatch, MetricGroup.BREAKER.value)
    cb = CircuitBreaker("off", meter_provider=metrics.provider)
    cb.call(_noop)
    cb.open()
    assert not {n for n in _names(metrics) if n.startswith("circuit_breaker.")}
    assert registry_for(metrics.provider).breaker_series == {}
    assert cb._rows is None


async def test_disabling_only_the_duration_histogram_keeps_counters_and_skips_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads = [0]

    def counting_clock() -> float:
        reads[0] += 1
        return 0.0

    monkeypatch.setattr(event_bus_module, "perf_counter", counting_clock)
    metrics = _disabled(monkeypatch, "bus_processing_duration")
    await _bus_traffic(metrics, events=50)
    names = _names(metrics)
    assert N["bus_processing_duration"] not in names
    assert metrics.value(N["bus_processed"], event_type="Tick") == 50
    assert reads[0] == 0


# -- batching --------------------------------------------------------------------------------------


def _collected(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    return [
        p
        for rm in (data.resource_metrics if data else ())
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points
    ]


@pytest.fixture
def plain() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=list(views()))
    yield provider, reader
    provider.shutdown()


def test_batched_values_reach_the_reader_on_its_next_collection(
    plain: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = plain
    batch = BatchedMetrics(provider)
    meter = provider.get_meter("test")
    fills = batch.wrap(meter.create_counter("strategy.fills"))
    latency = batch.wrap(meter.create_histogram("strategy.latency", unit="s"))
    for i in range(100):
        fills.add(2, {"symbol": "BTC"})
        latency.record(i / 1000)
    assert batch.pending == 200
    [fills_point] = _collected(reader, "strategy.fills")
    assert fills_point.value == 200
    assert batch.pending == 0


def test_batched_histogram_values_arrive_individually_with_exact_count_and_sum(
    plain: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = plain
    batch = BatchedMetrics(provider)
    latency = batch.wrap(provider.get_meter("test").create_histogram("strategy.latency", unit="s"))
    values = [0.001 * i for i in range(1, 51)]
    for v in values:
        latency.record(v, {"symbol": "ETH"})
    [point] = _collected(reader, "strategy.latency")
    assert point.count == 50
    assert point.sum == pytest.approx(sum(values))
    assert (point.min, point.max) == (0.001, 0.05)


def test_batched_counter_reaches_the_sdk_once_per_attribute_set() -> None:
    calls: list[tuple[float, Any]] = []

    class RecordingCounter(NoOpCounter):
        def add(self, amount: float, attributes: Any = None, context: Any = None) -> None:
            calls.append((amount, dict(attributes or {})))

    batch = BatchedMetrics(make_metrics(True).provider)
    counter = batch.wrap(RecordingCounter("fills"))
    btc, eth = {"symbol": "BTC"}, {"symbol": "ETH"}
    for _ in range(1000):
        counter.add(1, btc)
        counter.add(1, eth)
    counter.add(5, {"symbol": "BTC"})  # an equal mapping, not the same object: still one add
    batch.flush()
    assert sorted(calls, key=lambda c: c[1]["symbol"]) == [(1005, btc), (1000, eth)]


def test_batched_gauge_sets_only_the_last_value_per_attribute_set(
    plain: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = plain
    batch = BatchedMetrics(provider)
    depth = batch.wrap(provider.get_meter("test").create_gauge("book.depth"))
    for v in (5, 9, 3):
        depth.set(v, {"side": "bid"})
    [point] = _collected(reader, "book.depth")
    assert point.value == 3


def test_full_batch_buffer_drops_and_counts_instead_of_growing(
    plain: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = plain
    batch = BatchedMetrics(provider, max_pending=10)
    fills = batch.wrap(provider.get_meter("test").create_counter("strategy.fills"))
    for _ in range(25):
        fills.add(1)
    assert (batch.pending, batch.dropped) == (10, 15)
    [point] = _collected(reader, "strategy.fills")
    assert point.value == 10


def test_batch_buffer_accepts_again_after_a_collection_drains_it(
    plain: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = plain
    batch = BatchedMetrics(provider, max_pending=10)
    fills = batch.wrap(provider.get_meter("test").create_counter("strategy.fills"))
    for _ in range(10):
        fills.add(1)
    reader.get_metrics_data()
    for _ in range(10):
        fills.add(1)
    [point] = _collected(reader, "strategy.fills")
    assert point.value == 20 and batch.dropped == 0


def test_batched_counter_is_exact_under_8_threads(plain: tuple[MeterProvider, InMemoryMetricReader]) -> None:
    provider, reader = plain
    batch = BatchedMetrics(provider, max_pending=1_000_000)
    fills = batch.wrap(provider.get_meter("test").create_counter("strategy.fills"))
    attrs = {"symbol": "BTC"}
    stop = threading.Event()

    def collector() -> None:  # flushes concurrently with the writers
        while not stop.is_set():
            reader.get_metrics_data()

    def writer() -> None:
        for _ in range(5_000):
            fills.add(1, attrs)

    flusher = threading.Thread(target=collector)
    flusher.start()
    writers = [threading.Thread(target=writer) for _ in range(THREADS)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    flusher.join()
    [point] = _collected(reader, "strategy.fills")
    assert point.value == THREADS * 5_000
    assert batch.dropped == 0


def test_batch_close_flushes_and_stops_flushing_on_collection(
    plain: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = plain
    batch = BatchedMetrics(provider)
    fills = batch.wrap(provider.get_meter("test").create_counter("strategy.fills"))
    fills.add(7)
    batch.close()
    fills.add(1)  # after close: buffered, not flushed by collections
    [point] = _collected(reader, "strategy.fills")
    assert point.value == 7 and batch.pending == 1


def test_batch_wrap_rejects_observable_instruments(plain: tuple[MeterProvider, InMemoryMetricReader]) -> None:
    provider, _ = plain
    gauge = provider.get_meter("test").create_observable_gauge("book.depth", [])
    with pytest.raises(TypeError, match="cannot batch"):
        BatchedMetrics(provider).wrap(gauge)


@pytest.mark.parametrize("max_pending", [0, -1, 1.5, True])
def test_batch_max_pending_must_be_a_positive_integer(max_pending: Any) -> None:
    with pytest.raises(ValueError, match="max_pending"):
        BatchedMetrics(make_metrics(True).provider, max_pending=max_pending)


def test_exit_handler_flushes_every_open_batch(plain: tuple[MeterProvider, InMemoryMetricReader]) -> None:
    provider, _ = plain
    batch = BatchedMetrics(provider)
    fills = batch.wrap(provider.get_meter("test").create_counter("strategy.fills"))
    fills.add(3)
    batching_module._flush_at_exit()
    assert batch.pending == 0 and batch.flushed == 1


def test_collection_hook_runs_with_every_otel_trading_metric_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(OTEL_TRADING_DISABLED_METRICS, ",".join(g.value for g in MetricGroup))
    metrics = make_metrics(True)
    runs = [0]

    def hook() -> None:
        runs[0] += 1

    registry_for(metrics.provider).add_collection_hook(hook)
    collected = metrics.collect()
    assert runs[0] == 1
    assert collected == {}  # the hook's trigger instrument reports nothing


def test_collection_hook_runs_once_per_collection(plain: tuple[MeterProvider, InMemoryMetricReader]) -> None:
    provider, reader = plain
    runs = [0]

    def hook() -> None:
        runs[0] += 1

    registry = registry_for(provider)
    remove = registry.add_collection_hook(hook)
    reader.get_metrics_data()
    reader.get_metrics_data()
    remove()
    reader.get_metrics_data()
    assert runs[0] == 2
