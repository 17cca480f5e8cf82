"""The SDK extension point that lets locally accumulated histograms leave as genuine OTel data.

The OTel API has no asynchronous histogram, and the SDK's synchronous ``Histogram.record`` costs
~10 us in Python: far too much for a tick path. otel-trading therefore buckets durations in plain
per-thread lists (see ``recording.py``) and plugs this aggregation into the SDK with a ``View``.
The SDK still owns everything after that: it calls ``collect()`` on each reader's collection,
applies the reader's temporality, and hands ``HistogramDataPoint`` objects to the standard readers
and exporters (Prometheus, OTLP, console).

How a series is bound: the first observation of a series is recorded once through the real SDK
instrument while ``PRIMING.series`` names the series; the SDK then creates one aggregation per
reader through ``TradingHistogramAggregation._create_aggregation``, which binds to that series.
Without our view (e.g. a provider built by ``opentelemetry-instrument``) no binding happens and
the series falls back to recording every value through the SDK: slower, equally correct.

This relies on the SDK's private ``_ExplicitBucketHistogramAggregation`` base class (the SDK
labels the output type by it), so the SDK is pinned to one minor line in pyproject.toml and
``tests/test_sdk_bridge.py`` fails loudly if the contract changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics._internal.aggregation import (
    _Aggregation,
    _ExplicitBucketHistogramAggregation,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, HistogramDataPoint
from opentelemetry.sdk.metrics.view import Aggregation, View
from opentelemetry.util.types import Attributes

from otel_trading.metric_contract import METRICS, InstrumentKind

if TYPE_CHECKING:
    from otel_trading.recording import HistogramSeries

__all__ = ["PRIMING", "TradingHistogramAggregation", "views"]


class _Priming(threading.local):
    series: HistogramSeries | None = None


#: Set (per thread) only for the duration of a priming ``record()`` call.
PRIMING = _Priming()


class _BridgedHistogram(_ExplicitBucketHistogramAggregation):
    """Reports a ``HistogramSeries``' local buckets; ignores the SDK measurements it is fed."""

    def __init__(
        self,
        series: HistogramSeries | None,
        attributes: Attributes,
        start_time_unix_nano: int,
        reservoir_builder: Any,
    ) -> None:
        boundaries = series.boundaries if series is not None else None
        super().__init__(
            attributes,
            AggregationTemporality.DELTA,
            start_time_unix_nano,
            reservoir_builder,
            boundaries,
            True,
        )
        self._series = series
        # Delta readers: what the previous aggregation for this series last reported.
        self._last = series.delta_mark if series is not None else None

    def aggregate(self, measurement: Any, should_sample_exemplar: bool = True) -> None:
        # The priming value is already in the series' local buckets.
        return None

    def collect(
        self,
        collection_aggregation_temporality: AggregationTemporality,
        collection_start_nano: int,
    ) -> HistogramDataPoint | None:
        series = self._series
        if series is None:
            return None
        total_sum, vmin, vmax, buckets = series.totals()
        if collection_aggregation_temporality is AggregationTemporality.DELTA:
            last = self._last
            self._last = (total_sum, buckets)
            # The SDK drops synchronous delta aggregations after each collection; the next
            # observation primes a fresh one, continuing from this mark.
            series.delta_mark = self._last
            series.bridged = False
            start = self._previous_collection_start_nano
            self._previous_collection_start_nano = collection_start_nano
            if last is not None:
                total_sum -= last[0]
                buckets = tuple(b - p for b, p in zip(buckets, last[1], strict=True))
        else:
            start = self._start_time_unix_nano
        count = sum(buckets)
        if count == 0:
            return None
        return HistogramDataPoint(
            attributes=self._attributes,
            exemplars=(),
            start_time_unix_nano=start,
            time_unix_nano=collection_start_nano,
            count=count,
            sum=total_sum,
            bucket_counts=buckets,
            explicit_bounds=self._boundaries,
            min=vmin,
            max=vmax,
        )


class TradingHistogramAggregation(Aggregation):
    """View aggregation for otel-trading's duration histograms (see the module docstring)."""

    def _create_aggregation(
        self,
        instrument: Any,
        attributes: Attributes,
        reservoir_factory: Callable[[type[_Aggregation[Any]]], Any],
        start_time_unix_nano: int,
    ) -> _Aggregation[Any]:
        series = PRIMING.series if attributes is not None else None
        if series is not None:
            series.bridge_seen = True
        return _BridgedHistogram(
            series,
            attributes,
            start_time_unix_nano,
            reservoir_factory(_ExplicitBucketHistogramAggregation),
        )


def views(meter_name: str | None = None) -> Sequence[View]:
    """Views to pass to ``MeterProvider(views=...)`` so histograms take the fast path.

    ``configure_metrics()`` and ``start_metrics_server()`` add them for you.
    """
    from otel_trading.recording import METER_NAME

    return [
        View(
            instrument_name=spec.otel_name,
            meter_name=meter_name or METER_NAME,
            aggregation=TradingHistogramAggregation(),
        )
        for spec in METRICS
        if spec.kind is InstrumentKind.HISTOGRAM
    ]
