"""Bounded cardinality, nothing lost: data-derived label values fold into ``__overflow__``.

5,000 distinct event types through one bus must leave at most 1,001 series per metric (1,000
values plus the overflow series) while the totals over all series stay exactly what happened. The
fold is visible (``otel_trading_label_values_folded_total`` and one warning) and memory stays flat
past the limit: folded classes share a row per bus instead of growing the metrics layer per class.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from otel_trading import CircuitBreaker, EventBus
from otel_trading.exporting import prometheus_reader
from otel_trading.metric_contract import OVERFLOW_LABEL_VALUE

from ..conftest import Metrics, make_metrics
from ..realprocs import samples

DISTINCT = 5_000
LIMIT = 1_000


class Heartbeat:
    """A known, low-cardinality event type published alongside the flood."""


def event_types(n: int, prefix: str = "Symbol") -> list[type]:
    # Classes built up front so a memory measurement sees the bus, not the test's class objects.
    return [type(f"{prefix}{i}", (), {}) for i in range(n)]


async def _publish(bus: EventBus, types: list[type], heartbeats: int = 0) -> None:
    async with bus:
        for klass in types:
            await bus.publish(klass())
        for _ in range(heartbeats):
            await bus.publish(Heartbeat())


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _series(scraped: Samples, name: str) -> dict[str, float]:
    """{event_type: value} of one sample name in a parsed scrape."""
    return {
        dict(labels)["event_type"]: value
        for (sample, labels), value in scraped.items()
        if sample == name and "event_type" in dict(labels)
    }


@pytest.fixture(scope="module")
def flooded() -> Iterator[tuple[Samples, EventBus]]:
    """One bus that saw 5,000 distinct event types plus 7 heartbeats; yields (parsed scrape, bus).

    Module-scoped (one flood for all the checks below), so the provider is passed explicitly
    rather than installed globally: the per-test reset of OTel globals cannot pull it away.
    """
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[prometheus_reader(registry)])
    bus = EventBus(name="flood", meter_provider=provider)
    asyncio.run(_publish(bus, event_types(DISTINCT), heartbeats=7))
    # The exposition /metrics would serve, rendered in-process.
    yield samples(generate_latest(registry).decode()), bus
    provider.shutdown()


# --- the bound, on the real Prometheus exposition ------------------------------------------------


def test_5000_event_types_publish_at_most_1001_series(flooded: tuple[Samples, EventBus]) -> None:
    published = _series(flooded[0], "event_bus_events_published_total")
    assert len(published) <= LIMIT + 1
    assert OVERFLOW_LABEL_VALUE in published


def test_sum_over_published_series_is_everything_published(flooded: tuple[Samples, EventBus]) -> None:
    published = _series(flooded[0], "event_bus_events_published_total")
    assert sum(published.values()) == DISTINCT + 7


def test_sum_over_processed_series_and_histogram_counts_is_everything_processed(
    flooded: tuple[Samples, EventBus],
) -> None:
    scraped = flooded[0]
    assert sum(_series(scraped, "event_bus_events_processed_total").values()) == DISTINCT + 7
    assert sum(_series(scraped, "event_bus_processing_duration_seconds_count").values()) == DISTINCT + 7


def test_values_seen_before_the_limit_keep_their_own_series(flooded: tuple[Samples, EventBus]) -> None:
    published = _series(flooded[0], "event_bus_events_published_total")
    # The first 1,000 types got their own series; every later one went to the overflow series.
    assert published["Symbol0"] == 1 and published["Symbol999"] == 1
    assert "Symbol1000" not in published
    assert published[OVERFLOW_LABEL_VALUE] == DISTINCT - LIMIT + 7


def test_fold_counter_counts_folded_values_by_label(flooded: tuple[Samples, EventBus]) -> None:
    folded = {
        dict(labels)["label"]: value
        for (sample, labels), value in flooded[0].items()
        if sample == "otel_trading_label_values_folded_total"
    }
    # Heartbeat arrived after the limit too, so it is folded as well.
    # Every bounded label is reported, at 0 until one of its values is folded.
    assert folded == {"event_type": DISTINCT - LIMIT + 1, "name": 0, "bus": 0, "loop": 0}


# --- the bound, on both histogram paths (with and without otel-trading's views) -----------------


def test_histogram_totals_survive_folding_on_both_paths(metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRADING_MAX_LABEL_VALUES", "10")
    bus = EventBus(meter_provider=metrics.provider)
    asyncio.run(_publish(bus, event_types(50)))
    points = metrics.points("event_bus.processing.duration")
    assert len(points) == 11
    assert sum(p.count for p in points) == 50


# --- visibility and configuration -----------------------------------------------------------------


def test_the_first_fold_logs_one_warning(metrics: Metrics, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_trading"):
        bus = EventBus(meter_provider=metrics.provider)
        asyncio.run(_publish(bus, event_types(LIMIT + 50)))
    warnings = [r for r in caplog.records if OVERFLOW_LABEL_VALUE in r.getMessage()]
    assert len(warnings) == 1
    assert "OTEL_TRADING_MAX_LABEL_VALUES" in warnings[0].getMessage()


def test_the_limit_is_configurable(metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRADING_MAX_LABEL_VALUES", "25")
    bus = EventBus(meter_provider=metrics.provider)
    asyncio.run(_publish(bus, event_types(100)))
    assert len(metrics.points("event_bus.events.published")) == 26


def test_breaker_names_fold_and_keep_exact_totals(metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRADING_MAX_LABEL_VALUES", "5")
    breakers = [CircuitBreaker(f"venue-{i}", meter_provider=metrics.provider) for i in range(20)]
    for breaker in breakers:
        breaker.call(lambda: None)
    points = metrics.points("circuit_breaker.successes")
    assert len(points) == 6
    assert sum(p.value for p in points) == 20
    assert metrics.value("otel_trading.label_values.folded", label="name") == 15


def test_collections_do_not_count_folded_subscriptions_again(metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    # The subscriber gauge resolves labels on every collection; before the fix each one re-folded
    # (and re-counted) every subscribed type beyond the limit.
    monkeypatch.setenv("OTEL_TRADING_MAX_LABEL_VALUES", "3")
    bus = EventBus(meter_provider=metrics.provider)
    for klass in event_types(8):
        bus.subscribe(klass, lambda e: None)
    counts = [metrics.value("otel_trading.label_values.folded", label="event_type") for _ in range(3)]
    assert counts == [5, 5, 5]


def test_folded_subscriptions_report_their_subscribers_under_overflow(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRADING_MAX_LABEL_VALUES", "3")
    bus = EventBus(meter_provider=metrics.provider)
    for klass in event_types(8):
        bus.subscribe(klass, lambda e: None)
    assert metrics.value("event_bus.subscribers_gauge", event_type=OVERFLOW_LABEL_VALUE) == 5
    del bus


# --- memory ------------------------------------------------------------------------------------------


def _traced_growth(action: Any, settle: Any = None) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        if settle is not None:
            # State replaced at every collection (the registry keeps the last snapshot) must be
            # allocated while traced, or its replacement would count as growth.
            settle()
            gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        action()
        gc.collect()
        return int(tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_past_the_limit() -> None:
    metrics = make_metrics(with_views=True)
    try:
        labelled, folded = event_types(LIMIT), event_types(DISTINCT - LIMIT, prefix="Late")
        bus = EventBus(meter_provider=metrics.provider)

        def flood(types: list[type]) -> None:
            asyncio.run(_publish(bus, types))
            metrics.collect()  # the SDK's per-series state counts too

        per_labelled = _traced_growth(lambda: flood(labelled), settle=metrics.collect) / LIMIT
        per_folded = _traced_growth(lambda: flood(folded), settle=metrics.collect) / (DISTINCT - LIMIT)
    finally:
        metrics.provider.shutdown()
    print(f"bytes per event type: labelled {per_labelled:.0f}, folded {per_folded:.0f}")
    # Measured: ~9 kB per labelled type, ~0.2 kB per folded one (the bus's routing cache entry).
    # Before folded classes shared a row it was ~1 kB each; allow 2x headroom over today's figure.
    assert per_folded < 400
    assert per_folded < per_labelled / 10
