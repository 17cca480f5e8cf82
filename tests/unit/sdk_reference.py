"""Test-side reference for histograms and exemplars: the OTel SDK's own aggregation, normalized, and its closed form."""

from __future__ import annotations

import functools
import random
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, ExemplarFilter, Histogram, MeterProvider
from opentelemetry.sdk.metrics._internal import instrument as _sdk_instrument
from opentelemetry.sdk.metrics._internal.aggregation import (
    _DEFAULT_EXPLICIT_BUCKET_HISTOGRAM_AGGREGATION_BOUNDARIES,
)
from opentelemetry.sdk.metrics._internal.exponential_histogram.mapping.exponent_mapping import ExponentMapping
from opentelemetry.sdk.metrics._internal.exponential_histogram.mapping.logarithm_mapping import LogarithmMapping
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
)
from opentelemetry.sdk.metrics.view import (
    Aggregation,
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

T = TypeVar("T")

M20 = LogarithmMapping(20)
_M0 = ExponentMapping(0)
MERGE_SCALE_CRASH = "Incorrect merge scale"
DEFAULT_EXPLICIT_BOUNDARIES: tuple[float, ...] = tuple(_DEFAULT_EXPLICIT_BUCKET_HISTOGRAM_AGGREGATION_BOUNDARIES)

Temporality = Literal["delta", "cumulative"]
Mode = Literal["reset", "sticky", "cumulative"]
AttrsKey = tuple[tuple[str, Any], ...]
DataPoint = ExponentialHistogramDataPoint | HistogramDataPoint
_TEMPORALITY = {"delta": AggregationTemporality.DELTA, "cumulative": AggregationTemporality.CUMULATIVE}


# --------------------------------------------------------------------------------------------------
# Normalized, comparable forms of SDK points
# --------------------------------------------------------------------------------------------------


class BucketsKey(NamedTuple):
    """Exponential buckets with the zero buckets at both ends removed (offset adjusted; empty: offset 0)."""

    offset: int
    counts: tuple[int, ...]


class ExpoPoint(NamedTuple):
    """The contract part of an `ExponentialHistogramDataPoint` (no timestamps, exemplars or trailing zeros)."""

    scale: int
    zero_count: int
    count: int  # type: ignore[assignment]  # shadows tuple.count, as the SDK's field name
    sum: float
    min: float
    max: float
    flags: int
    positive: BucketsKey
    negative: BucketsKey
    attributes: AttrsKey


class ExplicitPoint(NamedTuple):
    """The contract part of a `HistogramDataPoint` (no timestamps or exemplars)."""

    count: int  # type: ignore[assignment]  # shadows tuple.count, as the SDK's field name
    sum: float
    min: float
    max: float
    bucket_counts: tuple[int, ...]
    explicit_bounds: tuple[float, ...]
    attributes: AttrsKey


class ExemplarKey(NamedTuple):
    """An `Exemplar` as a tuple; `filtered_attributes` is None when the measurement had no attributes."""

    value: float
    time_unix_nano: int
    trace_id: int | None
    span_id: int | None
    filtered_attributes: AttrsKey | None


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def attributes_key(attributes: Mapping[str, Any] | None) -> AttrsKey:
    """Attributes as a sorted tuple of items (None and {} both give ())."""
    return _freeze(attributes or {})  # type: ignore[no-any-return,unused-ignore]


def normalize_buckets(offset: int, counts: Sequence[int]) -> BucketsKey:
    """Appendix A's `normalize`: drop zero buckets at both ends, moving the offset past the leading ones."""
    c = list(counts)
    while c and c[-1] == 0:
        c.pop()
    start = 0
    while start < len(c) and c[start] == 0:
        start += 1
    c = c[start:]
    return BucketsKey(offset + start if c else 0, tuple(c))


def normalize_expo(point: ExponentialHistogramDataPoint) -> ExpoPoint:
    """The comparable contract of an SDK exponential point (trailing zero buckets depend on measurement order)."""
    return ExpoPoint(
        scale=point.scale,
        zero_count=point.zero_count,
        count=point.count,
        sum=point.sum,
        min=point.min,
        max=point.max,
        flags=point.flags,
        positive=normalize_buckets(point.positive.offset, point.positive.bucket_counts),
        negative=normalize_buckets(point.negative.offset, point.negative.bucket_counts),
        attributes=attributes_key(point.attributes),
    )


def normalize_explicit(point: HistogramDataPoint) -> ExplicitPoint:
    """The comparable contract of an SDK explicit-bucket point."""
    return ExplicitPoint(
        count=point.count,
        sum=point.sum,
        min=point.min,
        max=point.max,
        bucket_counts=tuple(point.bucket_counts),
        explicit_bounds=tuple(point.explicit_bounds),
        attributes=attributes_key(point.attributes),
    )


def normalize_point(point: DataPoint) -> ExpoPoint | ExplicitPoint:
    """`normalize_expo` or `normalize_explicit`, by the point's type."""
    if isinstance(point, ExponentialHistogramDataPoint):
        return normalize_expo(point)
    return normalize_explicit(point)


def normalize_exemplars(point: DataPoint) -> tuple[ExemplarKey, ...]:
    """The point's exemplars in the SDK's order (reservoir slot / bucket index, ascending), as tuples."""
    return tuple(
        ExemplarKey(
            value=e.value,
            time_unix_nano=e.time_unix_nano,
            trace_id=e.trace_id,
            span_id=e.span_id,
            filtered_attributes=None if e.filtered_attributes is None else attributes_key(e.filtered_attributes),
        )
        for e in point.exemplars
    )


# --------------------------------------------------------------------------------------------------
# The closed form (docs/design/native-histograms-and-exemplars.md §2.6 and Appendix A)
# --------------------------------------------------------------------------------------------------


def i20(value: float) -> int:
    """The SDK's scale-20 index of a positive value; its index at scale s (1..20) is `i20(v) >> (20 - s)`."""
    return M20.map_to_index(value)


def exponent_mapping_disagrees(value: float) -> bool:
    """True if the SDK's `ExponentMapping` (scales <= 0) puts `value` elsewhere than the shifted log index."""
    return _M0.map_to_index(value) != i20(value) >> 20


def fit_scale(lo: int, hi: int, max_size: int = 160, start: int = 20) -> int:
    """Largest scale <= `start` at which scale-20 indices lo..hi span fewer than `max_size` buckets."""
    s = start
    while (hi >> (20 - s)) - (lo >> (20 - s)) >= max_size:
        s -= 1
    return s


def closed_form(
    values: Sequence[float],
    max_size: int = 160,
    max_scale: int = 20,
    floor: int = 20,
    *,
    phantom: bool = False,
) -> tuple[int | None, int, tuple[int, ...]]:
    """(scale, offset, counts) of the SDK point for `values`; scale None without values, (0, 0, ()) for zeros only.

    `floor` caps the scale (sticky delta: the previous scale; cumulative: 0 after a zero-only interval);
    `phantom` puts index 0 into the range (the cumulative stream after a zero-only first interval).
    `counts` runs from the lowest to the highest non-empty bucket, as `normalize_buckets` leaves the SDK's.
    """
    pos = [i20(v) for v in values if v > 0]
    if not pos:
        return (0 if values else None), 0, ()
    lo, hi = min(pos), max(pos)
    if phantom:
        lo, hi = min(lo, 0), max(hi, 0)
    s = fit_scale(lo, hi, max_size, min(max_scale, floor))
    k = 20 - s
    hist = Counter(i >> k for i in pos)
    off = min(hist)
    return s, off, tuple(hist.get(off + j, 0) for j in range(max(hist) - off + 1))


def _seq_sum(values: Sequence[float], start: float = 0) -> float:
    total = start
    for v in values:
        total += v
    return total


@dataclass
class _Simulation:
    points: list[ExpoPoint | None] = field(default_factory=list)
    mapping_scales: list[int | None] = field(default_factory=list)  # the aggregation's mapping after each interval
    crash_at: int | None = None  # first collection at which the SDK raises "Incorrect merge scale"
    exact: bool = True  # False: the SDK's mapping went <= 0 with a value ExponentMapping places differently


def _simulate(
    intervals: Sequence[Sequence[float]],
    mode: Mode,
    max_size: int,
    max_scale: int,
    attributes: Mapping[str, Any] | None,
    record_min_max: bool,
) -> _Simulation:
    sim = _Simulation()
    attrs = attributes_key(attributes)
    negative = BucketsKey(0, ())
    sigma = max_scale  # sticky / cumulative: the (never reset) aggregation's mapping scale
    seen: list[float] = []  # cumulative: every value so far
    seen_ambiguous = False
    started = False  # cumulative: the aggregation exists (something was recorded)
    zero_floor = False  # cumulative: some interval so far was zero-only
    phantom_pending = False  # cumulative: zero-only first interval, no positive merged yet
    phantom = False  # cumulative: index 0 is in the previous range
    c_sum: float = 0
    c_count = c_zero = 0
    c_min, c_max = float("inf"), float("-inf")
    for k, values in enumerate(intervals):
        positives = [v for v in values if v > 0]
        zero_only = bool(values) and not positives
        ambiguous = any(exponent_mapping_disagrees(v) for v in positives)
        seen_ambiguous = seen_ambiguous or ambiguous
        if mode == "reset":
            mapping = None
            if positives:
                mapping = fit_scale(min(map(i20, positives)), max(map(i20, positives)), max_size, max_scale)
            if mapping is not None and mapping <= 0 and ambiguous:
                sim.exact = False
        elif positives:
            sigma = fit_scale(min(map(i20, positives)), max(map(i20, positives)), max_size, sigma)
            mapping = sigma
            if sigma <= 0 and seen_ambiguous:
                sim.exact = False
        else:
            mapping = sigma if (started or values) else None
        sim.mapping_scales.append(mapping)

        i_min = min(values) if values and record_min_max else float("inf")
        i_max = max(values) if values and record_min_max else float("-inf")
        i_sum = _seq_sum(values)
        i_zero = len(values) - len(positives)
        if mode in ("reset", "sticky"):
            if not values:
                sim.points.append(None)
                continue
            counts: tuple[int, ...]
            if zero_only:
                scale, off, counts = 0, 0, ()
            else:
                floor = 20 if mode == "reset" else sigma
                s, off, counts = closed_form(values, max_size, max_scale, floor)
                assert s is not None
                scale = s
            sim.points.append(
                ExpoPoint(scale, i_zero, len(values), i_sum, i_min, i_max, 0, BucketsKey(off, counts), negative, attrs)
            )
            continue

        # cumulative
        if not started and not values:
            sim.points.append(None)
            continue
        if not started and zero_only:
            phantom_pending = True
        started = True
        zero_floor = zero_floor or zero_only
        seen.extend(values)
        if positives and phantom_pending:
            # This collection sizes the range without the phantom, then merges into it: the SDK raises if it
            # does not fit. From the next collection on the phantom is part of the range.
            s0, _, _ = closed_form(seen, max_size, max_scale, 0)
            assert s0 is not None
            lo = min(min(i20(v) for v in seen if v > 0) >> (20 - s0), 0)
            hi = max(max(i20(v) for v in seen if v > 0) >> (20 - s0), 0)
            if hi - lo >= max_size and sim.crash_at is None:
                sim.crash_at = k
            phantom_pending, phantom = False, True
        s, off, counts = closed_form(seen, max_size, max_scale, 0 if zero_floor else 20, phantom=phantom)
        assert s is not None
        c_sum = i_sum + c_sum
        c_count += len(values)
        c_zero += i_zero
        c_min, c_max = min(i_min, c_min), max(i_max, c_max)
        positive = BucketsKey(off, counts)
        sim.points.append(ExpoPoint(s, c_zero, c_count, c_sum, c_min, c_max, 0, positive, negative, attrs))
    return sim


def expected_expo_points(
    intervals: Sequence[Sequence[float]],
    mode: Mode,
    max_size: int = 160,
    max_scale: int = 20,
    *,
    attributes: Mapping[str, Any] | None = None,
    record_min_max: bool = True,
) -> list[ExpoPoint | None]:
    """Closed-form point per collection of one stream (`intervals`: values recorded before each); None: no point."""
    return _simulate(intervals, mode, max_size, max_scale, attributes, record_min_max).points


def expected_scales(
    intervals: Sequence[Sequence[float]], mode: Mode, max_size: int = 160, max_scale: int = 20
) -> list[int | None]:
    """Reported scale per collection: reset delta (1.45), sticky delta (<=1.44) or cumulative (zero-only floor)."""
    return [None if p is None else p.scale for p in expected_expo_points(intervals, mode, max_size, max_scale)]


def sdk_merge_crash_at(
    intervals: Sequence[Sequence[float]], mode: Mode, max_size: int = 160, max_scale: int = 20
) -> int | None:
    """Index of the collection at which the SDK raises "Incorrect merge scale" (cumulative only), or None."""
    return _simulate(intervals, mode, max_size, max_scale, None, True).crash_at


def closed_form_is_exact(
    intervals: Sequence[Sequence[float]], mode: Mode, max_size: int = 160, max_scale: int = 20
) -> bool:
    """False if the SDK's mapping drops to scale <= 0 (span >= 2**(max_size/2)) with a value 1 ulp off."""
    return _simulate(intervals, mode, max_size, max_scale, None, True).exact


def expected_explicit_points(
    intervals: Sequence[Sequence[float]],
    temporality: Temporality,
    boundaries: Sequence[float] | None = None,
    *,
    attributes: Mapping[str, Any] | None = None,
    record_min_max: bool = True,
) -> list[ExplicitPoint | None]:
    """Explicit-bucket point per collection of one stream (the SDK's bisect_left buckets); None: no point."""
    bounds = tuple(DEFAULT_EXPLICIT_BOUNDARIES if boundaries is None else boundaries)
    attrs = attributes_key(attributes)
    out: list[ExplicitPoint | None] = []
    c_counts = [0] * (len(bounds) + 1)
    c_sum: float = 0
    c_min, c_max = float("inf"), float("-inf")
    started = False
    for values in intervals:
        counts = [0] * (len(bounds) + 1)
        for v in values:
            counts[bisect_left(bounds, v)] += 1
        i_sum = _seq_sum(values)
        i_min = min(values) if values and record_min_max else float("inf")
        i_max = max(values) if values and record_min_max else float("-inf")
        if temporality == "delta":
            delta = ExplicitPoint(len(values), i_sum, i_min, i_max, tuple(counts), bounds, attrs)
            out.append(delta if values else None)
            continue
        started = started or bool(values)
        if not started:
            out.append(None)
            continue
        c_counts = [a + b for a, b in zip(counts, c_counts, strict=True)]
        c_sum = i_sum + c_sum
        c_min, c_max = min(i_min, c_min), max(i_max, c_max)
        out.append(ExplicitPoint(sum(c_counts), c_sum, c_min, c_max, tuple(c_counts), bounds, attrs))
    return out


# --------------------------------------------------------------------------------------------------
# Driving the real SDK
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReaderSpec:
    """One `InMemoryMetricReader`: temporality and histogram aggregation (`sticky_delta`: force <=1.44 delta)."""

    temporality: Temporality = "cumulative"
    aggregation: Literal["explicit", "exponential"] = "exponential"
    boundaries: tuple[float, ...] | None = None  # explicit; None: the SDK's default boundaries
    max_size: int = 160
    max_scale: int = 20
    record_min_max: bool = True
    sticky_delta: bool = False  # set the matches' `_reset_on_collect` to False (SDK >= 1.45)

    def sdk_aggregation(self) -> Aggregation:
        """The SDK aggregation this spec stands for."""
        if self.aggregation == "explicit":
            return ExplicitBucketHistogramAggregation(boundaries=self.boundaries, record_min_max=self.record_min_max)
        # record_min_max is not a parameter before SDK 1.4x: pass it only when it is not the default.
        extra = {} if self.record_min_max else {"record_min_max": False}
        return ExponentialBucketHistogramAggregation(max_size=self.max_size, max_scale=self.max_scale, **extra)

    def mode(self) -> Mode:
        """The closed form's mode for this reader on the installed SDK."""
        if self.temporality == "cumulative":
            return "cumulative"
        return "reset" if sdk_resets_delta() and not self.sticky_delta else "sticky"


@dataclass(frozen=True)
class Batch:
    """Values recorded one after another, with their attributes and, per value, an optional span context."""

    values: tuple[float, ...]
    attributes: Mapping[str, Any] | None = None
    span_contexts: tuple[SpanContext | None, ...] | None = None


BatchLike = Batch | Sequence[float]


def as_batch(batch: BatchLike) -> Batch:
    """A `Batch` from a `Batch` or a plain sequence of values."""
    return batch if isinstance(batch, Batch) else Batch(tuple(batch))


def span_context(trace_id: int, span_id: int, *, sampled: bool = True) -> SpanContext:
    """A valid span context, sampled or not."""
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(0x01 if sampled else 0x00))


def ticker(start: int = 1_000_000_000, step: int = 1) -> Callable[[], int]:
    """A deterministic `time_ns` replacement: start, start + step, ..."""
    state = [start - step]

    def time_ns() -> int:
        state[0] += step
        return state[0]

    return time_ns


@contextmanager
def patched_time_ns(time_ns: Callable[[], int] | None) -> Iterator[None]:
    """Make `Histogram.record` (sdk/metrics/_internal/instrument.py) take measurement times from `time_ns`."""
    if time_ns is None:
        yield
        return
    original = _sdk_instrument.time_ns
    _sdk_instrument.time_ns = time_ns
    try:
        yield
    finally:
        _sdk_instrument.time_ns = original


_RESETS_DELTA: list[bool] = []


def sdk_resets_delta() -> bool:
    """True if the installed SDK re-creates delta aggregations at each collection (1.45+), False if sticky."""
    if not _RESETS_DELTA:
        reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
        provider = MeterProvider([reader], resource=Resource.get_empty(), shutdown_on_exit=False)
        try:
            hist = provider.get_meter("sdk_reference.probe").create_histogram("probe")
            matches = _matches(provider, reader, hist)
            _RESETS_DELTA.append(any(getattr(m, "_reset_on_collect", False) for m in matches))
        finally:
            provider.shutdown()
    return _RESETS_DELTA[0]


def _matches(provider: MeterProvider, reader: InMemoryMetricReader, instrument: Any) -> list[Any]:
    """The reader's `_ViewInstrumentMatch`es of `instrument` (created now if no measurement made them yet)."""
    storage = provider._measurement_consumer._reader_storages[reader]
    return list(storage._get_or_init_view_instrument_match(instrument))


def _schedule(n_batches: int, n_readers: int, collect_after: Sequence[Sequence[bool]] | None) -> list[list[bool]]:
    if collect_after is None:
        return [[True] * n_batches for _ in range(n_readers)]
    if len(collect_after) != n_readers or any(len(s) != n_batches for s in collect_after):
        raise ValueError("collect_after needs one flag per batch for each reader")
    return [list(s) for s in collect_after]


def _points_of(data: MetricsData | None, name: str) -> list[DataPoint]:
    points: list[DataPoint] = []
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    points.extend(metric.data.data_points)  # type: ignore[arg-type]
    return sorted(points, key=lambda p: repr(attributes_key(p.attributes)))


def run_sdk_points(
    batches: Sequence[BatchLike],
    readers_spec: Sequence[ReaderSpec],
    collect_after: Sequence[Sequence[bool]] | None = None,
    *,
    exemplar_filter: ExemplarFilter | None = None,
    time_ns: Callable[[], int] | None = None,
    random_seed: int | None = None,
    name: str = "duration",
) -> list[list[list[DataPoint]]]:
    """Like `run_sdk`, but the raw SDK data points (with timestamps and exemplars)."""
    bs = [as_batch(b) for b in batches]
    schedule = _schedule(len(bs), len(readers_spec), collect_after)
    readers = [
        InMemoryMetricReader(
            preferred_temporality={Histogram: _TEMPORALITY[s.temporality]},
            preferred_aggregation={Histogram: s.sdk_aggregation()},
        )
        for s in readers_spec
    ]
    provider = MeterProvider(
        readers,
        resource=Resource.get_empty(),
        exemplar_filter=exemplar_filter or AlwaysOffExemplarFilter(),
        shutdown_on_exit=False,
    )
    out: list[list[list[DataPoint]]] = [[] for _ in readers]
    try:
        hist = provider.get_meter("sdk_reference").create_histogram(name, unit="s")
        for reader, spec in zip(readers, readers_spec, strict=True):
            if spec.sticky_delta:
                for match in _matches(provider, reader, hist):
                    if getattr(match, "_reset_on_collect", False):
                        match._reset_on_collect = False
        with patched_time_ns(time_ns):
            if random_seed is not None:
                random.seed(random_seed)
            for b, batch in enumerate(bs):
                spans = batch.span_contexts or (None,) * len(batch.values)
                for value, sc in zip(batch.values, spans, strict=True):
                    ctx: Context | None = None
                    if sc is not None:
                        ctx = trace.set_span_in_context(NonRecordingSpan(sc))
                    hist.record(value, attributes=batch.attributes, context=ctx)
                for r, reader in enumerate(readers):
                    if schedule[r][b]:
                        out[r].append(_points_of(reader.get_metrics_data(), name))
    finally:
        provider.shutdown()
    return out


def run_sdk(
    batches: Sequence[BatchLike],
    readers_spec: Sequence[ReaderSpec],
    collect_after: Sequence[Sequence[bool]] | None = None,
    *,
    exemplar_filter: ExemplarFilter | None = None,
    time_ns: Callable[[], int] | None = None,
    random_seed: int | None = None,
    normalize: Callable[[DataPoint], Any] = normalize_point,
) -> list[list[list[Any]]]:
    """Record each batch on one SDK histogram, collect reader r after batch b if collect_after[r][b] (None: all).

    Returns, per reader, per collection it had, its points (sorted by attributes) through `normalize`.
    `exemplar_filter` None means AlwaysOff (not the environment's); `time_ns` replaces the measurement clock;
    `random_seed` seeds the global `random`, which the SimpleFixedSizeExemplarReservoir draws from.
    Raises the SDK's `Exception("Incorrect merge scale")` where it does (see `sdk_merge_crash_at`).
    """
    raw = run_sdk_points(
        batches, readers_spec, collect_after, exemplar_filter=exemplar_filter, time_ns=time_ns, random_seed=random_seed
    )
    return [[[normalize(p) for p in points] for points in reader] for reader in raw]


def is_merge_scale_crash(exc: BaseException) -> bool:
    """True for the SDK's `Exception("Incorrect merge scale")` (cumulative, small max_size, zero-only start)."""
    return type(exc) is Exception and str(exc) == MERGE_SCALE_CRASH


def intervals_for(
    batches: Sequence[BatchLike], schedule: Sequence[bool], attributes: Mapping[str, Any] | None = None
) -> list[list[float]]:
    """Values one reader's stream with `attributes` saw before each of its collections (`schedule`: per batch)."""
    key = attributes_key(attributes)
    out: list[list[float]] = []
    pending: list[float] = []
    for batch, collect in zip((as_batch(b) for b in batches), schedule, strict=True):
        if attributes_key(batch.attributes) == key:
            pending.extend(batch.values)
        if collect:
            out.append(pending)
            pending = []
    return out


def expected_run(
    batches: Sequence[BatchLike],
    readers_spec: Sequence[ReaderSpec],
    collect_after: Sequence[Sequence[bool]] | None = None,
) -> list[list[list[ExpoPoint | ExplicitPoint]]]:
    """What `run_sdk` returns by the closed form (and bisect for explicit readers), with no SDK involved."""
    bs = [as_batch(b) for b in batches]
    schedule = _schedule(len(bs), len(readers_spec), collect_after)
    attr_sets: dict[AttrsKey, Mapping[str, Any] | None] = {}
    for b in bs:
        attr_sets.setdefault(attributes_key(b.attributes), b.attributes)
    out: list[list[list[ExpoPoint | ExplicitPoint]]] = []
    for spec, sched in zip(readers_spec, schedule, strict=True):
        per_attrs: list[Sequence[ExpoPoint | ExplicitPoint | None]] = []
        for attrs in attr_sets.values():
            intervals = intervals_for(bs, sched, attrs)
            if spec.aggregation == "explicit":
                per_attrs.append(
                    expected_explicit_points(
                        intervals,
                        spec.temporality,
                        spec.boundaries,
                        attributes=attrs,
                        record_min_max=spec.record_min_max,
                    )
                )
            else:
                per_attrs.append(
                    expected_expo_points(
                        intervals,
                        spec.mode(),
                        spec.max_size,
                        spec.max_scale,
                        attributes=attrs,
                        record_min_max=spec.record_min_max,
                    )
                )
        n = sum(sched)
        out.append(
            [
                sorted(
                    (p for p in (col[i] for col in per_attrs) if p is not None),
                    key=lambda p: repr(p.attributes),
                )
                for i in range(n)
            ]
        )
    return out


# --------------------------------------------------------------------------------------------------
# Exemplar reservoirs, reimplemented (SDK 1.45.2 sdk/metrics/_internal/exemplar/exemplar_reservoir.py)
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def simple_reservoir_fill_offset() -> int:
    """How many fewer than `size` offers SimpleFixedSizeExemplarReservoir places before it starts drawing.

    SDK 1.45 fills all `size` slots first (0); 1.40 draws from the `size`-th offer on (1).
    """
    from opentelemetry.sdk.metrics._internal.exemplar import exemplar_reservoir as module

    reservoir = module.SimpleFixedSizeExemplarReservoir(size=2)
    draws: list[int] = []
    original = module.randrange
    module.randrange = lambda a, b: draws.append(b) or 0  # type: ignore[assignment,func-returns-value]
    try:
        for _ in range(2):
            reservoir._find_bucket_index(1.0, 0, None, None)
    finally:
        module.randrange = original
    return len(draws)


def simple_reservoir_slots(n_offers: int, size: int, rng: random.Random | None = None) -> list[int | None]:
    """Slot each offer of one interval lands in (None: dropped), as SimpleFixedSizeExemplarReservoir decides.

    The first `size` offers (`size - 1` before SDK 1.4x, see `simple_reservoir_fill_offset`) take their
    slots without drawing; each later offer n (1-based) draws `randrange(0, n)` from the module-level
    `random` (here `rng`) and keeps the slot if it is < size.
    """
    draw = (rng or random).randrange
    fill = size - simple_reservoir_fill_offset()
    slots: list[int | None] = []
    for seen in range(1, n_offers + 1):
        if seen <= fill:
            slots.append(seen - 1)
        else:
            j = draw(0, seen)
            slots.append(j if j < size else None)
    return slots


def aligned_bucket(value: float, boundaries: Sequence[float]) -> int:
    """AlignedHistogramBucketExemplarReservoir's bucket: the first boundary >= value (= bisect_left), no randomness."""
    for index, boundary in enumerate(boundaries):
        if value <= boundary:
            return index
    return len(boundaries)


class Offer(NamedTuple):
    """One measurement offered to a reservoir."""

    value: float
    time_unix_nano: int
    attributes: Mapping[str, Any] | None
    span: SpanContext | None


def reservoir_exemplars(
    offers: Sequence[Offer], slots: Sequence[int | None], point_attributes: Mapping[str, Any] | None
) -> tuple[ExemplarKey, ...]:
    """The SDK's exemplars for one interval, given each offer's slot: last offer per slot, slots ascending.

    Replicates ExemplarBucket's stale ids: an offer without a valid span keeps the slot's previous ids.
    """
    buckets: dict[int, list[Any]] = {}
    for offer, slot in zip(offers, slots, strict=True):
        if slot is None:
            continue
        b = buckets.setdefault(slot, [0.0, 0, None, None, None])
        b[0], b[1], b[4] = offer.value, offer.time_unix_nano, offer.attributes
        if offer.span is not None:  # the SDK tests `span != INVALID_SPAN`: any span put in the context counts
            b[2], b[3] = offer.span.trace_id, offer.span.span_id
    point_keys = set((point_attributes or {}).keys())
    return tuple(
        ExemplarKey(
            b[0],
            b[1],
            b[2],
            b[3],
            attributes_key({k: v for k, v in b[4].items() if k not in point_keys}) if b[4] else None,
        )
        for _, b in sorted(buckets.items())
    )
