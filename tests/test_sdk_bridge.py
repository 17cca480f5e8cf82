"""The SDK extension point behind fast histograms: pinned, and checked against the SDK it runs on.

If an SDK upgrade changes how views create aggregations, these fail before users see wrong data.
"""

from __future__ import annotations

import importlib.metadata

from opentelemetry.sdk.metrics._internal.aggregation import _ExplicitBucketHistogramAggregation
from opentelemetry.sdk.metrics.export import AggregationTemporality, Histogram

from otel_trading import CircuitBreaker, views
from otel_trading.metric_contract import BREAKER_LATENCY, DURATION_BUCKETS, METRICS, InstrumentKind
from otel_trading.sdk_bridge import _BridgedHistogram

from .conftest import make_metrics


def test_sdk_version_is_inside_the_pinned_line() -> None:
    version = importlib.metadata.version("opentelemetry-sdk")
    assert version.startswith("1.45."), f"sdk_bridge is verified against 1.45.x, found {version}"


def test_bridge_aggregation_is_recognised_by_the_sdk_as_a_histogram() -> None:
    # The SDK picks the output type by isinstance on this private base class.
    assert issubclass(_BridgedHistogram, _ExplicitBucketHistogramAggregation)


def test_views_cover_every_histogram_in_the_contract() -> None:
    names = sorted(v._instrument_name for v in views())
    assert names == sorted(m.otel_name for m in METRICS if m.kind is InstrumentKind.HISTOGRAM)


def test_series_binds_to_the_bridge_when_views_are_installed() -> None:
    m = make_metrics(bridged=True)
    cb = CircuitBreaker(name="b", meter_provider=m.provider)
    cb.call(lambda: None)
    assert cb._series is not None and cb._series.bridged and not cb._series.direct


def test_series_falls_back_to_direct_recording_without_the_views() -> None:
    m = make_metrics(bridged=False)
    cb = CircuitBreaker(name="b", meter_provider=m.provider)
    cb.call(lambda: None)
    assert cb._series is not None and cb._series.direct and not cb._series.bridged


def test_bridged_and_direct_paths_put_the_same_values_in_the_same_buckets() -> None:
    values = [0.00002, 0.0003, 0.004, 0.05, 0.6, 1.5, 7.0, 45.0]
    points = []
    for bridged in (True, False):
        m = make_metrics(bridged)
        cb = CircuitBreaker(name="b", meter_provider=m.provider)
        series = cb._series
        assert series is not None
        row = cb._rows.row()  # type: ignore[union-attr]
        for v in values:
            if series.bridged:
                from otel_trading.recording import observe

                observe(row, v)
            else:
                series.observe_slow(row, v)
        points.append(m.histogram(BREAKER_LATENCY.otel_name, name="b"))
    bridged_point, direct_point = points
    assert bridged_point is not None and direct_point is not None
    assert bridged_point.bucket_counts == direct_point.bucket_counts
    assert bridged_point.count == direct_point.count == len(values)
    assert bridged_point.sum == direct_point.sum
    assert (bridged_point.min, bridged_point.max) == (direct_point.min, direct_point.max) == (0.00002, 45.0)
    assert tuple(bridged_point.explicit_bounds) == DURATION_BUCKETS


def test_delta_readers_get_per_interval_counts_from_the_bridge() -> None:
    m = make_metrics(True, AggregationTemporality.DELTA)
    cb = CircuitBreaker(name="d", meter_provider=m.provider)
    for _ in range(3):
        cb.call(lambda: None)
    first = m.collect()[BREAKER_LATENCY.otel_name]
    assert isinstance(first.data, Histogram)
    assert first.data.aggregation_temporality is AggregationTemporality.DELTA
    assert first.data.data_points[0].count == 3
    for _ in range(2):
        cb.call(lambda: None)
    second = m.collect()[BREAKER_LATENCY.otel_name]
    assert second.data.data_points[0].count == 2
    assert second.data.data_points[0].start_time_unix_nano >= first.data.data_points[0].time_unix_nano


def test_delta_interval_with_no_observations_exports_no_point() -> None:
    m = make_metrics(True, AggregationTemporality.DELTA)
    cb = CircuitBreaker(name="idle", meter_provider=m.provider)
    cb.call(lambda: None)
    m.collect()
    assert BREAKER_LATENCY.otel_name not in m.collect()
