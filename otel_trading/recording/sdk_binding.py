"""Serves otel-trading's duration histograms to SDK readers straight from the rows.

The OTel API has no asynchronous histogram, and the SDK's ``Histogram.record`` costs ~10 us in
Python: far too much for a tick path. Components therefore bucket durations in plain rows, and at
collection each reader of an SDK ``MeterProvider`` gets the rows' totals as an ordinary
explicit-bucket histogram stream. The SDK keeps one stream object per (reader, instrument) -- its
private ``_ViewInstrumentMatch`` -- built from the provider's views and the reader's preferred
aggregation; ``install`` swaps each of ours for a ``RowsHistogramStream`` that keeps the same name,
description, unit, scope and cardinality limit. This needs no ``View``, so it works on providers the
application or ``opentelemetry-instrument`` built.

That private structure is checked once per process by ``rows_supported()``, a self-test against
the installed SDK. Where it fails, histograms are recorded through the SDK instrument instead:
correct and slower, with one WARNING naming the SDK version.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from bisect import bisect_left
from collections.abc import Sequence
from importlib import metadata
from typing import Any, NamedTuple

from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Buckets,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
)
from opentelemetry.sdk.metrics.view import (
    DefaultAggregation,
    DropAggregation,
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)

from otel_trading.metric_contract import DURATION_BUCKETS, METRICS, SCOPE_NAME, InstrumentKind
from otel_trading.recording.exemplars import AlignedReservoir, Offer, SimpleReservoir, simple_fill_offset
from otel_trading.recording.exponential import MAX_SCALE, MAX_SIZE, MIN_SCALE, ExponentialBuckets
from otel_trading.recording.rows import fork_safe

__all__ = [
    "HistogramTotals",
    "RowsExponentialStream",
    "RowsHistogramStream",
    "exponential_limits",
    "incompatibility",
    "install",
    "rows_supported",
    "sdk_version",
    "views",
]

_logger = logging.getLogger("otel_trading.recording")

_OVERFLOW_ATTRIBUTES = {"otel.metric.overflow": True}


class HistogramTotals(NamedTuple):
    """One series' histogram at one collection: cumulative counts plus the extremes it saw."""

    key: object
    attributes: dict[str, str]
    values: int
    sum: float
    buckets: tuple[int, ...]
    #: extremes since the previous collection of the same provider (any reader)
    epoch_min: float
    epoch_max: float
    #: extremes over every collection so far
    all_min: float
    all_max: float
    start_ns: int
    #: the exponential buckets of the values since the previous collection of the provider, when
    #: a reader takes exponential histograms (shared by every reader's stream: read only)
    epoch: ExponentialBuckets | None = None


class _RowsStream:
    """What the SDK's ``MetricReaderStorage`` reads off a stream it holds, and the stream's exemplar reservoirs."""

    def __init__(self, match: Any) -> None:
        self._match = match
        # What MetricReaderStorage.collect reads off a stream.
        self._view = match._view
        self._instrument = match._instrument
        self._name = match._name
        self._description = match._description
        self._aggregation = match._aggregation
        self._limit: int | None = getattr(match, "_cardinality_limit", None)
        self._lock = threading.Lock()
        fork_safe(self)
        self._own: dict[object, None] = {}
        self._previous_ns: int | None = None
        self._reservoirs: dict[object, Any] = {}

    def conflicts(self, other: Any) -> bool:
        return bool(self._match.conflicts(other))

    def consume_measurement(self, measurement: Any, should_sample_exemplar: bool = True) -> None:
        """Nothing records through the instrument while its streams are ours."""

    def offer(self, key: object, offer: Offer) -> None:
        """An exemplar candidate of series ``key`` (see ``recording.exemplars``)."""
        reservoir = self._reservoirs.get(key)
        if reservoir is None:
            reservoir = self._reservoirs.setdefault(key, self._new_reservoir())
        reservoir.offer(offer)

    def _new_reservoir(self) -> Any:
        raise NotImplementedError

    def _exemplars(self, key: object, filtered: dict[str, Any] | None) -> list[Any]:
        reservoir = self._reservoirs.get(key)
        return reservoir.collect(filtered) if reservoir is not None else []


class RowsHistogramStream(_RowsStream):
    """Takes the place of the SDK's stream for one (reader, histogram): reports the rows' totals.

    Per reader, because each reader has its own temporality and collection times: a delta reader
    gets its own interval's count, sum, buckets, min and max however many other readers collect.
    ``bounds`` are the bucket boundaries of the rows it reports.
    """

    def __init__(self, match: Any, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
        super().__init__(match)
        self._bounds = bounds
        self._latest: Sequence[HistogramTotals] = ()
        self._cumulative_extremes: dict[object, tuple[float, float]] = {}
        self._interval_extremes: dict[object, tuple[float, float]] = {}
        self._last: dict[object, tuple[int, float, tuple[int, ...]]] = {}

    def _new_reservoir(self) -> AlignedReservoir:
        return AlignedReservoir(self._bounds)

    def note(self, totals: Sequence[HistogramTotals]) -> None:
        """Called at every collection of the provider, whichever reader collects."""
        with self._lock:
            self._latest = totals
            cumulative, interval = self._cumulative_extremes, self._interval_extremes
            for t in totals:
                if t.key not in cumulative:
                    # First sight: this reader's first interval covers everything so far.
                    cumulative[t.key] = interval[t.key] = (t.all_min, t.all_max)
                    continue
                if t.epoch_min <= t.epoch_max:
                    low, high = cumulative[t.key]
                    cumulative[t.key] = (min(low, t.epoch_min), max(high, t.epoch_max))
                    low, high = interval.get(t.key, (math.inf, -math.inf))
                    interval[t.key] = (min(low, t.epoch_min), max(high, t.epoch_max))

    def collect(self, temporality: AggregationTemporality, collection_start_nanos: int) -> list[Any] | None:
        with self._lock:
            delta = temporality is AggregationTemporality.DELTA
            if delta:
                # The SDK starts each delta interval with no attribute sets: so does the limit.
                self._own = {}
            points: list[HistogramDataPoint] = []
            overflow: list[Any] | None = None
            for t in self._latest:
                if t.values == 0:
                    continue
                if delta:
                    last = self._last.get(t.key)
                    self._last[t.key] = (t.values, t.sum, t.buckets)
                    low, high = self._interval_extremes.pop(t.key, (math.inf, -math.inf))
                    if last is None:
                        count, total, buckets, start = t.values, t.sum, t.buckets, t.start_ns
                    else:
                        count = t.values - last[0]
                        if count == 0:
                            continue
                        total = t.sum - last[1]
                        buckets = tuple(b - p for b, p in zip(t.buckets, last[2], strict=True))
                        start = self._previous_ns or t.start_ns
                else:
                    count, total, buckets, start = t.values, t.sum, t.buckets, t.start_ns
                    low, high = self._cumulative_extremes.get(t.key, (t.all_min, t.all_max))
                if low > high:  # extremes lost to a race with the hot path: widen to the known range
                    low, high = t.all_min, t.all_max
                if self._limit is None or t.key in self._own or len(self._own) < self._limit:
                    self._own[t.key] = None
                    exemplars = self._exemplars(t.key, {})
                    points.append(
                        _point(
                            t.attributes,
                            start,
                            collection_start_nanos,
                            count,
                            total,
                            buckets,
                            low,
                            high,
                            self._bounds,
                            exemplars,
                        )
                    )
                elif overflow is None:
                    overflow = [start, count, total, list(buckets), low, high, self._exemplars(t.key, t.attributes)]
                else:
                    overflow[0] = min(overflow[0], start)
                    overflow[1] += count
                    overflow[2] += total
                    overflow[3] = [a + b for a, b in zip(overflow[3], buckets, strict=True)]
                    overflow[4] = min(overflow[4], low)
                    overflow[5] = max(overflow[5], high)
                    overflow[6] = _latest_per_bucket(overflow[6] + self._exemplars(t.key, t.attributes), self._bounds)
            if overflow is not None:
                start, count, total, merged, low, high, exemplars = overflow
                points.append(
                    _point(
                        dict(_OVERFLOW_ATTRIBUTES),
                        start,
                        collection_start_nanos,
                        count,
                        total,
                        merged,
                        low,
                        high,
                        self._bounds,
                        exemplars,
                    )
                )
            self._previous_ns = collection_start_nanos
            return points or None


def _point(
    attributes: Any,
    start: int,
    now: int,
    count: int,
    total: float,
    buckets: Sequence[int],
    low: float,
    high: float,
    bounds: tuple[float, ...],
    exemplars: Sequence[Any] = (),
) -> HistogramDataPoint:
    return HistogramDataPoint(
        attributes=attributes,
        start_time_unix_nano=start,
        time_unix_nano=now,
        count=count,
        sum=total,
        bucket_counts=tuple(buckets),
        explicit_bounds=bounds,
        min=low,
        max=high,
        exemplars=list(exemplars),
    )


def _latest_per_bucket(exemplars: Sequence[Any], bounds: tuple[float, ...]) -> list[Any]:
    # Overflowed series share one point, so one exemplar per bucket: the latest, as one reservoir would keep.
    latest: dict[int, Any] = {}
    for e in exemplars:
        i = bisect_left(bounds, e.value)
        if i not in latest or e.time_unix_nano >= latest[i].time_unix_nano:
            latest[i] = e
    return [latest[i] for i in sorted(latest)]


class _ExponentialState:
    """One attribute set of one exponential stream: what its reader has not collected yet, and history."""

    __slots__ = ("attributes", "cumulative", "pending", "phantom", "start_ns", "sticky_scale", "zero_floor")

    def __init__(self, attributes: Any, start_ns: int, max_scale: int, max_size: int) -> None:
        self.attributes = attributes
        self.start_ns = start_ns
        self.pending = ExponentialBuckets(max_scale, max_size)
        self.cumulative: ExponentialBuckets | None = None
        self.sticky_scale = max_scale
        # The SDK's cumulative quirks: an interval of zeros only pins the scale at <= 0 for good, and
        # a first such interval leaves bucket index 0 inside the range.
        self.zero_floor = False
        self.phantom = False


class RowsExponentialStream(_RowsStream):
    """The exponential twin of ``RowsHistogramStream``: gives one reader the SDK's exponential points.

    Each collection of the provider hands every stream the buckets of the values since the previous
    one (``HistogramTotals.epoch``); a stream merges them until its reader collects, then reports
    what the SDK's ``_ExponentialBucketHistogramAggregation`` would for the same values: the scale
    that fits them in ``max_size`` buckets (1.45's delta streams start each interval at
    ``max_scale``; older SDKs keep the lowest scale so far), zero count, sum and extremes.
    Bucket counts carry no zero buckets beyond the occupied range (the SDK's trailing zeros depend
    on the order of measurements).
    """

    def __init__(self, match: Any) -> None:
        super().__init__(match)
        self._max_size: int = match._aggregation._max_size
        self._max_scale: int = match._aggregation._max_scale
        self._record_min_max: bool = getattr(match._aggregation, "_record_min_max", True)
        # SDK 1.45 starts every delta interval afresh; earlier ones keep the aggregation (and its scale).
        self._reset: bool = bool(getattr(match, "_reset_on_collect", False))
        self._states: dict[object, _ExponentialState] = {}
        self._overflow: _ExponentialState | None = None
        self._reservoir_size = min(20, self._max_size)

    def _new_reservoir(self) -> SimpleReservoir:
        return SimpleReservoir(self._reservoir_size, self._reservoir_size - simple_fill_offset())

    def note(self, totals: Sequence[HistogramTotals]) -> None:
        """Called at every collection of the provider, whichever reader collects."""
        with self._lock:
            for t in totals:
                state = self._states.get(t.key)
                if state is None:
                    state = self._states[t.key] = _ExponentialState(
                        t.attributes, t.start_ns, self._max_scale, self._max_size
                    )
                if t.epoch is not None and t.epoch.count:
                    state.pending.merge(t.epoch, self._max_scale, self._max_size)

    def collect(self, temporality: AggregationTemporality, collection_start_nanos: int) -> list[Any] | None:
        with self._lock:
            delta = temporality is AggregationTemporality.DELTA
            if delta:
                self._own = {}
            points: list[ExponentialHistogramDataPoint] = []
            overflowed = False
            overflow_exemplars: list[Any] = []
            for key, state in self._states.items():
                if self._limit is not None and key not in self._own and len(self._own) >= self._limit:
                    if self._overflow is None:
                        self._overflow = _ExponentialState(
                            dict(_OVERFLOW_ATTRIBUTES), state.start_ns, self._max_scale, self._max_size
                        )
                    self._overflow.pending.merge(state.pending, self._max_scale, self._max_size)
                    state.pending = ExponentialBuckets(self._max_scale, self._max_size)
                    overflow_exemplars.extend(self._exemplars(key, state.attributes))
                    overflowed = True
                    continue
                point = self._point(state, delta, collection_start_nanos, self._exemplars(key, {}))
                if point is not None:
                    self._own[key] = None
                    points.append(point)
            if overflowed or (self._overflow is not None and not delta):
                assert self._overflow is not None
                # Overflowed series share one point: at most one reservoir's worth of their exemplars.
                kept = sorted(overflow_exemplars, key=lambda e: e.time_unix_nano)[-self._reservoir_size :]
                point = self._point(self._overflow, delta, collection_start_nanos, kept)
                if point is not None:
                    points.append(point)
            self._previous_ns = collection_start_nanos
            return points or None

    def _point(
        self, state: _ExponentialState, delta: bool, now: int, exemplars: list[Any]
    ) -> ExponentialHistogramDataPoint | None:
        interval = state.pending
        if interval.count:
            state.pending = ExponentialBuckets(self._max_scale, self._max_size)
        zeros_only = interval.count > 0 and interval.zero == interval.count
        if delta:
            if not interval.count:
                return None
            if not zeros_only and not self._reset:
                state.sticky_scale = min(state.sticky_scale, interval.scale)
                interval.downscale(interval.scale - state.sticky_scale)
            start = self._previous_ns or state.start_ns
            scale = 0 if zeros_only else interval.scale
            return self._data_point(state.attributes, start, now, interval, scale, exemplars)
        total = state.cumulative
        if interval.count:
            if total is None:
                total = state.cumulative = ExponentialBuckets(self._max_scale, self._max_size)
                state.phantom = zeros_only
            if zeros_only:
                state.zero_floor = True
            first_positive = not total.counts
            total.merge(interval, 0 if state.zero_floor else self._max_scale, self._max_size)
            if state.phantom and first_positive and total.counts:
                total.lo, total.hi = min(total.lo, 0), max(total.hi, 0)
        if total is None or not total.count:
            return None
        scale = total.scale if total.counts else 0
        if state.zero_floor and scale > 0:
            total.downscale(scale)
            scale = 0
        return self._data_point(state.attributes, state.start_ns, now, total, scale, exemplars)

    def _data_point(
        self, attributes: Any, start: int, now: int, buckets: ExponentialBuckets, scale: int, exemplars: list[Any]
    ) -> ExponentialHistogramDataPoint:
        offset, counts = buckets.offset_counts()
        low, high = (buckets.min, buckets.max) if self._record_min_max else (math.inf, -math.inf)
        return ExponentialHistogramDataPoint(
            attributes=attributes,
            start_time_unix_nano=start,
            time_unix_nano=now,
            count=buckets.count,
            sum=buckets.sum,
            scale=scale,
            zero_count=buckets.zero,
            positive=Buckets(offset=offset, bucket_counts=counts),
            negative=Buckets(offset=0, bucket_counts=[0]),
            flags=0,
            min=low,
            max=high,
            exemplars=exemplars,
        )


def _storages(provider: Any) -> list[Any]:
    return list(provider._measurement_consumer._reader_storages.values())


def install(
    provider: Any, instrument: Any, bounds: tuple[float, ...] = DURATION_BUCKETS
) -> list[RowsHistogramStream | RowsExponentialStream]:
    """Put a ``RowsHistogramStream`` (rows bucketed by ``bounds``), or a ``RowsExponentialStream`` where
    the reader or a view asks for exponential buckets, in every reader's place for ``instrument``;
    returns the new ones.

    Idempotent: call it at every collection, so readers added later are served too. Streams a view
    drops stay dropped.
    """
    from opentelemetry.sdk.metrics._internal.aggregation import (
        _DropAggregation,
        _ExponentialBucketHistogramAggregation,
    )

    installed: list[RowsHistogramStream | RowsExponentialStream] = []
    for storage in _storages(provider):
        with storage._lock:
            matches = storage._get_or_init_view_instrument_match(instrument)
            for i, match in enumerate(matches):
                if isinstance(match, RowsHistogramStream | RowsExponentialStream) or isinstance(
                    match._aggregation, _DropAggregation
                ):
                    continue
                stream: RowsHistogramStream | RowsExponentialStream
                if isinstance(match._aggregation, _ExponentialBucketHistogramAggregation):
                    stream = RowsExponentialStream(match)
                else:
                    stream = RowsHistogramStream(match, bounds)
                matches[i] = stream
                installed.append(stream)
    return installed


def _exponential_problem(aggregation: Any) -> str | None:
    size, scale = aggregation._max_size, aggregation._max_scale
    if not (MIN_SCALE <= scale <= MAX_SCALE and 2 <= size <= MAX_SIZE):
        return (
            f"an exponential histogram with max_size={size}, max_scale={scale} (otel-trading serves "
            f"max_size 2..{MAX_SIZE}, max_scale {MIN_SCALE}..{MAX_SCALE})"
        )
    return None


def _aggregations(provider: Any, instrument: Any) -> list[Any]:
    """The aggregations (public ``Aggregation`` objects) the provider's views and readers give ``instrument``."""
    found: list[Any] = []
    matched = False
    for view in provider._sdk_config.views:
        if view._match(instrument):
            matched = True
            if not isinstance(view._aggregation, DefaultAggregation):
                found.append(view._aggregation)
                continue
            found.extend(s._instrument_class_aggregation.get(type(instrument)) for s in _storages(provider))
    if not matched:
        found.extend(s._instrument_class_aggregation.get(type(instrument)) for s in _storages(provider))
    return [a for a in found if a is not None]


def exponential_limits(provider: Any, instrument: Any) -> tuple[int, int] | None:
    """(max_scale, max_size) the rows' exponential buckets need to serve every exponential reader of
    ``instrument`` exactly (the finest any asks for), or None when none asks for exponential buckets."""
    limits = [
        (a._max_scale, a._max_size)
        for a in _aggregations(provider, instrument)
        if isinstance(a, ExponentialBucketHistogramAggregation)
    ]
    if not limits:
        return None
    return max(scale for scale, _ in limits), max(size for _, size in limits)


def incompatibility(provider: Any, instrument: Any, bounds: tuple[float, ...] = DURATION_BUCKETS) -> str | None:
    """Why the rows (bucketed by ``bounds``) cannot stand for what ``provider`` would make of ``instrument``,
    or None."""

    def problem(aggregation: Any) -> str | None:
        if isinstance(aggregation, DefaultAggregation | DropAggregation):
            return None
        if isinstance(aggregation, ExplicitBucketHistogramAggregation):
            boundaries = aggregation._boundaries
            if boundaries is None or tuple(boundaries) == tuple(bounds):
                return None
            return f"{type(aggregation).__name__} with boundaries {list(boundaries)}"
        if isinstance(aggregation, ExponentialBucketHistogramAggregation):
            return _exponential_problem(aggregation)
        return f"the aggregation {type(aggregation).__name__}"

    for view in provider._sdk_config.views:
        if not view._match(instrument):
            continue
        if view._attribute_keys is not None:
            return f"a view keeps only the attributes {sorted(view._attribute_keys)} of {instrument.name}"
        reason = problem(view._aggregation)
        if reason is not None:
            return f"a view gives {instrument.name} {reason}"
    for storage in _storages(provider):
        reason = problem(storage._instrument_class_aggregation.get(type(instrument)))
        if reason is not None:
            return f"a reader prefers {reason} for histograms"
    return None


def sdk_version() -> str:
    try:
        return metadata.version("opentelemetry-sdk")
    except metadata.PackageNotFoundError:  # pragma: no cover - the SDK is a dependency
        return "unknown"


@functools.lru_cache(maxsize=1)
def rows_supported() -> bool:
    """Whether this SDK's private reader storage is what ``install`` expects: checked once, by use."""
    try:
        _self_test()
        return True
    except Exception as exc:
        _logger.warning(
            "otel-trading: opentelemetry-sdk %s is not one otel-trading can serve histograms to directly "
            "(%s: %s); durations are recorded through the SDK's Histogram instead: correct, but each costs "
            "as much as plain OpenTelemetry. Pin opentelemetry-sdk to a version otel-trading supports to keep "
            "the fast path.",
            sdk_version(),
            type(exc).__name__,
            exc,
        )
        return False


def _self_test() -> None:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = SdkMeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    try:
        histogram = provider.get_meter("otel_trading.self_test").create_histogram("self_test", unit="s")
        if incompatibility(provider, histogram) is not None:
            raise RuntimeError("a plain provider looks incompatible")
        streams = install(provider, histogram)
        if len(streams) != 1:
            raise RuntimeError(f"expected one stream per reader, found {len(streams)}")
        buckets = (2,) + (0,) * len(DURATION_BUCKETS)
        totals = HistogramTotals("k", {"k": "v"}, 2, 3e-6, buckets, 1e-6, 2e-6, 1e-6, 2e-6, 1)
        streams[0].note((totals,))
        data = reader.get_metrics_data()
        points = [
            p
            for rm in (data.resource_metrics if data else ())
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == "self_test"
            for p in m.data.data_points
            if isinstance(p, HistogramDataPoint)
        ]
        if len(points) != 1 or points[0].count != 2 or tuple(points[0].bucket_counts) != buckets:
            raise RuntimeError(f"the reader got {points!r}")
    finally:
        provider.shutdown()


def can_serve(provider: Any) -> bool:
    """Whether ``provider`` is an SDK MeterProvider whose readers the rows can be served to."""
    return isinstance(provider, SdkMeterProvider) and rows_supported()


def views() -> Sequence[View]:
    """Views fixing the buckets of otel-trading's histograms, for ``MeterProvider(views=...)``.

    Optional since 0.2: histograms take the fast path on any SDK provider. They still pin the
    bucket boundaries where an SDK ignores the instruments' advisory boundaries.
    """
    return [
        View(
            instrument_name=spec.otel_name,
            meter_name=SCOPE_NAME,
            aggregation=ExplicitBucketHistogramAggregation(boundaries=spec.buckets or DURATION_BUCKETS),
        )
        for spec in METRICS
        if spec.kind is InstrumentKind.HISTOGRAM
    ]
