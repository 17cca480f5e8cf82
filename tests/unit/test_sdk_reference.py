"""Self-tests of tests/unit/sdk_reference.py: its closed form and exemplar model agree with the installed SDK."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter, Histogram, MeterProvider, TraceBasedExemplarFilter
from opentelemetry.sdk.metrics._internal.exponential_histogram.mapping.logarithm_mapping import LogarithmMapping
from opentelemetry.sdk.metrics.export import AggregationTemporality, ExponentialHistogramDataPoint, InMemoryMetricReader

from . import duration_strategies as ds
from .sdk_reference import (
    M20,
    Batch,
    BucketsKey,
    ExemplarKey,
    Offer,
    ReaderSpec,
    _matches,
    aligned_bucket,
    closed_form,
    closed_form_is_exact,
    expected_expo_points,
    expected_run,
    expected_scales,
    exponent_mapping_disagrees,
    intervals_for,
    is_merge_scale_crash,
    normalize_buckets,
    normalize_exemplars,
    reservoir_exemplars,
    run_sdk,
    run_sdk_points,
    sdk_merge_crash_at,
    sdk_resets_delta,
    simple_reservoir_fill_offset,
    simple_reservoir_slots,
    span_context,
    ticker,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_LIMITS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)

CUMULATIVE = ReaderSpec("cumulative")
DELTA = ReaderSpec("delta")


def _run_or_assume(
    batches: Sequence[Sequence[float]], readers: Sequence[ReaderSpec], schedule: Sequence[Sequence[bool]]
) -> list[list[list[Any]]] | None:
    """`run_sdk`, or None where the SDK raises "Incorrect merge scale" (which must then be predicted)."""
    try:
        return run_sdk(batches, readers, schedule)
    except Exception as exc:
        if not is_merge_scale_crash(exc):
            raise
        return None


# ---------------------------------------------------------------------------------------------
# (a) LogarithmMapping(s) == LogarithmMapping(20) >> (20 - s), s = 1..20
# ---------------------------------------------------------------------------------------------


@st.composite
def _bucket_boundary_neighbours(draw: st.DrawFn) -> float:
    """The SDK's own lower boundary of a random bucket at a random scale, moved by -4..4 ulps."""
    s = draw(st.integers(1, 20))
    lo, hi = M20.map_to_index(ds.MIN_DURATION) >> (20 - s), M20.map_to_index(ds.MAX_DURATION) >> (20 - s)
    v = LogarithmMapping(s).get_lower_boundary(draw(st.integers(lo + 1, hi)))
    for _ in range(abs(n := draw(st.integers(-4, 4)))):
        v = math.nextafter(v, math.inf if n > 0 else 0.0)
    return v


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(ds.positive_durations(), ds.powers_of_two_and_neighbours(), _bucket_boundary_neighbours()),
    st.integers(1, 20),
)
def test_log_mapping_at_scale_s_is_scale_20_shifted(value: float, scale: int) -> None:
    assert LogarithmMapping(scale).map_to_index(value) == M20.map_to_index(value) >> (20 - scale)


def test_log_mapping_shift_on_every_power_of_two_neighbour() -> None:
    values = ds.power_of_two_neighbourhood()
    mismatches = [
        (v, s)
        for v in values
        for s in range(1, 21)
        if LogarithmMapping(s).map_to_index(v) != M20.map_to_index(v) >> (20 - s)
    ]
    assert mismatches == []
    # Where the shift does not carry on: ExponentMapping (scales <= 0) vs the shifted log index, for values a
    # few ulps off a power of two (mostly below it; also 1 ulp above 2**13). The closed form is exact only while
    # the SDK's mapping stays >= 1, or no such value is recorded (closed_form_is_exact).
    assert any(exponent_mapping_disagrees(v) for v in values)


def _ulps_to_nearest_power_of_two(v: float) -> float:
    p = 2.0 ** round(math.log2(v))
    return abs(v - p) / math.ulp(min(v, p))


@settings(max_examples=200, deadline=None)
@given(st.one_of(ds.positive_durations(), _bucket_boundary_neighbours()))
def test_exponent_mapping_agrees_away_from_powers_of_two(value: float) -> None:
    assume(_ulps_to_nearest_power_of_two(value) > 64)
    assert not exponent_mapping_disagrees(value)


# ---------------------------------------------------------------------------------------------
# normalization and the closed form on fixed examples
# ---------------------------------------------------------------------------------------------


def test_normalize_buckets_strips_both_ends() -> None:
    assert normalize_buckets(5, [0, 0, 1, 0, 2, 0, 0]) == BucketsKey(7, (1, 0, 2))
    assert normalize_buckets(5, [0, 0]) == BucketsKey(0, ())
    assert normalize_buckets(-3, [4]) == BucketsKey(-3, (4,))


def test_closed_form_examples() -> None:
    assert closed_form([]) == (None, 0, ())
    assert closed_form([0.0, 0.0]) == (0, 0, ())
    assert closed_form([2.5, 3.0])[0] == 9
    assert closed_form([2.5, 3.0])[1] == 676
    assert closed_form([3.0], floor=0) == (0, 1, (1,))
    assert closed_form([32.6], 3, 3, 0, phantom=True) == (-1, 2, (1,))


def test_design_examples_against_sdk() -> None:
    # Design Appendix A: "2.5 then 3.0" is scale 9, offset 676; "0.0 then 3.0" sticks at scale 0.
    (cum,) = run_sdk([[2.5], [3.0]], [CUMULATIVE])
    assert (cum[1][0].scale, cum[1][0].positive.offset) == (9, 676)
    raw = run_sdk_points([[2.5], [3.0]], [CUMULATIVE])[0][1][0]
    assert isinstance(raw, ExponentialHistogramDataPoint)
    assert len(raw.positive.bucket_counts) == 160  # the trailing zeros normalization removes
    (cum,) = run_sdk([[0.0], [3.0], [5.0]], [CUMULATIVE])
    assert [c[0].scale for c in cum] == [0, 0, 0]
    assert run_sdk([[0.0], [3.0], [5.0]], [CUMULATIVE]) == expected_run([[0.0], [3.0], [5.0]], [CUMULATIVE])


def test_merge_scale_crash_is_predicted() -> None:
    small = ReaderSpec(max_size=3, max_scale=3)
    for batches in ([[0.0], [32.6]], [[0.0], [32.6], [1.34e-7]]):
        assert sdk_merge_crash_at(batches, "cumulative", 3, 3) == 1
        with pytest.raises(Exception, match="Incorrect merge scale") as info:
            run_sdk(batches, [small])
        assert is_merge_scale_crash(info.value)
    # Without the zero-only first interval there is no phantom and no crash.
    assert sdk_merge_crash_at([[1.0], [32.6], [1.34e-7]], "cumulative", 3, 3) is None
    assert run_sdk([[1.0], [32.6], [1.34e-7]], [small]) == expected_run([[1.0], [32.6], [1.34e-7]], [small])


def test_scale_sequences_reset_sticky_cumulative() -> None:
    intervals = [[1.0, 1000.0], [2.5], [0.0], [3.0], [1e-6, 1.0]]
    reset = expected_scales(intervals, "reset")
    sticky = expected_scales(intervals, "sticky")
    cumulative = expected_scales(intervals, "cumulative")
    s = reset[0]
    assert s is not None and s < 20
    assert reset[1:4] == [20, 0, 20]
    assert sticky[:4] == [s, s, 0, s]
    assert cumulative[:2] == [s, s] and cumulative[2:] == [0, 0, 0]  # floored at 0 by the zero-only interval
    batches = [[*v] for v in intervals]
    got = run_sdk(batches, [CUMULATIVE, DELTA, ReaderSpec("delta", sticky_delta=True)])
    assert [c[0].scale for c in got[0]] == cumulative
    assert [c[0].scale for c in got[1]] == (reset if sdk_resets_delta() else sticky)
    assert [c[0].scale for c in got[2]] == sticky


# ---------------------------------------------------------------------------------------------
# The closed form against the SDK, property-based
# ---------------------------------------------------------------------------------------------


def _lowest_scale(scales: Sequence[int]) -> str:
    lowest = min(scales, default=20)
    return f"lowest scale {'<= 0' if lowest <= 0 else '1..19' if lowest < 20 else '20'}"


@FAST
@given(ds.batches_and_schedules(3))
def test_closed_form_matches_sdk_default_limits(case: tuple[list[list[float]], list[list[bool]]]) -> None:
    batches, schedule = case
    readers = [CUMULATIVE, DELTA, ReaderSpec("delta", aggregation="explicit", boundaries=(1e-6, 1e-3, 0.1, 1.0))]
    got = run_sdk(batches, readers, schedule)
    assert got == expected_run(batches, readers, schedule)
    scales = [p.scale for reader in got[:2] for col in reader for p in col]
    event(_lowest_scale(scales))


@SMALL_LIMITS
@given(
    st.sampled_from([2, 3, 4, 20]),
    st.sampled_from([1, 5, 20]),
    ds.batches_and_schedules(2, max_batches=6, max_values=6),
)
def test_closed_form_matches_sdk_small_limits(
    max_size: int, max_scale: int, case: tuple[list[list[float]], list[list[bool]]]
) -> None:
    batches, schedule = case
    readers = [ReaderSpec(t, max_size=max_size, max_scale=max_scale) for t in ("cumulative", "delta")]
    streams = [(intervals_for(batches, sched), spec.mode()) for spec, sched in zip(readers, schedule, strict=True)]
    # Outside the fast path's conditions (mapping scale <= 0 with a value ExponentMapping places differently),
    # the SDK depends on measurement order and there is nothing to compare with.
    exact = all(closed_form_is_exact(iv, mode, max_size, max_scale) for iv, mode in streams)
    event("skipped: SDK order-dependent (mapping <= 0)" if not exact else "compared")
    assume(exact)
    predicted_crash = sdk_merge_crash_at(streams[0][0], "cumulative", max_size, max_scale)
    got = _run_or_assume(batches, readers, schedule)
    assert (got is None) == (predicted_crash is not None)
    event("SDK raised Incorrect merge scale (predicted)" if got is None else "no crash")
    assume(got is not None)
    assert got is not None
    scales = [p.scale for reader in got for col in reader for p in col]
    event(_lowest_scale(scales))
    assert got == expected_run(batches, readers, schedule)


@FAST
@given(
    st.sampled_from([4, 20, 160]),
    st.sampled_from([5, 20]),
    ds.batches_and_schedules(1, max_batches=10),
)
def test_sticky_delta_matches_sdk_with_reset_on_collect_forced_off(
    max_size: int, max_scale: int, case: tuple[list[list[float]], list[list[bool]]]
) -> None:
    batches, schedule = case
    spec = ReaderSpec("delta", max_size=max_size, max_scale=max_scale, sticky_delta=True)
    intervals = intervals_for(batches, schedule[0])
    assume(closed_form_is_exact(intervals, "sticky", max_size, max_scale))
    (got,) = run_sdk(batches, [spec], schedule)
    expected = expected_expo_points(intervals, "sticky", max_size, max_scale)
    assert got == [[p] if p is not None else [] for p in expected]


def test_sdk_depends_on_order_outside_the_conditions() -> None:
    # max_size=2: the mapping drops to scale <= 0 (ExponentMapping), where 1 ulp below 2**8 lands elsewhere than
    # its log index says. The result then depends on the order of measurements; cumulative can even crash.
    a, b = 513.0, math.nextafter(256.0, 0.0)
    assert exponent_mapping_disagrees(b)
    assert not closed_form_is_exact([[a, b]], "reset", 2, 20)
    delta = ReaderSpec("delta", max_size=2)
    assert run_sdk([[a, b]], [delta]) != run_sdk([[b, a]], [delta])
    assert run_sdk([[b, a]], [delta]) == expected_run([[a, b]], [delta])
    with pytest.raises(IndexError):
        run_sdk([[a, b]], [ReaderSpec("cumulative", max_size=2)])


def test_reset_on_collect_is_how_the_sdk_versions_differ() -> None:
    # SDK >= 1.45: delta matches of synchronous instruments carry _reset_on_collect=True; <= 1.44 lack it.
    # (_matches is the private hook run_sdk uses to force it off.)
    reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    provider = MeterProvider([reader], shutdown_on_exit=False)
    try:
        hist = provider.get_meter("t").create_histogram("h")
        flags = [getattr(m, "_reset_on_collect", False) for m in _matches(provider, reader, hist)]
    finally:
        provider.shutdown()
    assert flags == [sdk_resets_delta()]
    # Sticky and reset differ on a narrow interval after a wide one.
    batches = [[1e-6, 100.0], [2.5, 2.5000001]]
    reset, sticky = run_sdk(batches, [DELTA, ReaderSpec("delta", sticky_delta=True)])
    assert sticky[1][0].scale == sticky[0][0].scale < 20
    if sdk_resets_delta():
        assert reset[1][0].scale == 20


@settings(max_examples=60, deadline=None)
@given(ds.batches_and_schedules(2, max_batches=5, max_values=5))
def test_two_attribute_sets(case: tuple[list[list[float]], list[list[bool]]]) -> None:
    batches, schedule = case
    tagged = [Batch(tuple(b), {"side": "buy" if i % 2 else "sell"}) for i, b in enumerate(batches)]
    readers = [CUMULATIVE, ReaderSpec("delta", aggregation="explicit")]
    assert run_sdk(tagged, readers, schedule) == expected_run(tagged, readers, schedule)


# ---------------------------------------------------------------------------------------------
# (b), (c) Exemplars: reservoirs, random draws and the measurement clock
# ---------------------------------------------------------------------------------------------

_SPAN = st.one_of(
    st.none(),
    st.builds(span_context, st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), sampled=st.booleans()),
)


@st.composite
def _exemplar_batches(draw: st.DrawFn, max_values: int = 30) -> list[Batch]:
    out = []
    for values in draw(st.lists(ds.batch_values(max_values), min_size=1, max_size=4)):
        spans = draw(st.lists(_SPAN, min_size=len(values), max_size=len(values)))
        attrs = draw(st.sampled_from([None, {"side": "buy"}]))
        out.append(Batch(tuple(values), attrs, tuple(spans)))
    return out


def _offers(batches: Sequence[Batch], start: int, filter_name: str, *, zeros: bool = True) -> list[list[Offer]]:
    """Offers per batch (the filter applied), with the ticker's timestamps.

    `zeros=False`: the exponential aggregation returns before `_sample_exemplar` for 0.0, so zeros are never
    offered (no exemplar, no `seen` increment, no random draw).
    """
    t = start
    out = []
    for b in batches:
        offers = []
        for v, sc in zip(b.values, b.span_contexts or (), strict=True):
            if (zeros or v != 0) and (filter_name == "always_on" or (sc is not None and sc.trace_flags.sampled)):
                offers.append(Offer(v, t, b.attributes, sc))
            t += 1
        out.append(offers)
    return out


@FAST
@given(_exemplar_batches(), st.sampled_from(["always_on", "trace_based"]), st.sampled_from(["delta", "cumulative"]))
def test_aligned_reservoir_keeps_last_offer_per_bucket(
    batches: list[Batch], filter_name: str, temporality: str
) -> None:
    bounds = (1e-6, 1e-3, 0.1, 1.0, 10.0)
    spec = ReaderSpec(temporality, aggregation="explicit", boundaries=bounds)  # type: ignore[arg-type]
    flt = AlwaysOnExemplarFilter() if filter_name == "always_on" else TraceBasedExemplarFilter()
    (got,) = run_sdk(batches, [spec], exemplar_filter=flt, time_ns=ticker(1000), normalize=normalize_exemplars)
    for b, (points, offers) in enumerate(zip(got, _offers(batches, 1000, filter_name), strict=True)):
        expected = reservoir_exemplars(offers, [aligned_bucket(o.value, bounds) for o in offers], batches[b].attributes)
        # Only the batch's own attribute set has offers in its interval.
        assert [e for e in points if e] == ([expected] if expected else [])


@FAST
@given(
    _exemplar_batches(),
    st.sampled_from(["always_on", "trace_based"]),
    st.sampled_from([2, 5, 20, 160]),
    st.integers(0, 2**32),
)
def test_simple_reservoir_is_reproducible_from_the_seed(
    batches: list[Batch], filter_name: str, max_size: int, seed: int
) -> None:
    # Two exponential readers: each measurement is offered to reader 0's reservoir, then reader 1's
    # (the provider's reader order), both drawing from the one module-level `random`.
    readers = [ReaderSpec("delta", max_size=max_size), ReaderSpec("cumulative", max_size=max_size)]
    flt = AlwaysOnExemplarFilter() if filter_name == "always_on" else TraceBasedExemplarFilter()
    # All values as one sticky stream: conservative for every stream here (the SDK can even raise IndexError).
    assume(closed_form_is_exact([b.values for b in batches], "sticky", max_size, 20))
    try:
        got = run_sdk(
            batches, readers, exemplar_filter=flt, time_ns=ticker(7), random_seed=seed, normalize=normalize_exemplars
        )
    except Exception as exc:  # the cumulative reader, small max_size, after a zero-only first interval
        if not is_merge_scale_crash(exc):
            raise
        assume(False)
    size = min(20, max_size)
    rng = random.Random(seed)
    for b, offers in enumerate(_offers(batches, 7, filter_name, zeros=False)):
        slots: list[list[int | None]] = [[], []]
        fill = size - simple_reservoir_fill_offset()
        for n in range(1, len(offers) + 1):
            for r in (0, 1):
                if n <= fill:
                    slots[r].append(n - 1)
                else:
                    j = rng.randrange(0, n)
                    slots[r].append(j if j < size else None)
        for r in (0, 1):
            expected = reservoir_exemplars(offers, slots[r], batches[b].attributes)
            assert [e for e in got[r][b] if e] == ([expected] if expected else [])
    # One reservoir alone: simple_reservoir_slots is the same draw sequence.
    assert (
        simple_reservoir_slots(50, 3, random.Random(seed))[: 3 - simple_reservoir_fill_offset()]
        == [0, 1, 2][: 3 - simple_reservoir_fill_offset()]
    )


def test_exemplar_time_is_the_measurement_clock_and_ids_go_stale() -> None:
    sc = span_context(0xABC, 0xDEF)
    batches = [Batch((0.5, 0.6), None, (sc, None))]  # same bucket; the second offer has no span
    spec = ReaderSpec("delta", aggregation="explicit", boundaries=(1.0,))
    (got,) = run_sdk(
        batches, [spec], exemplar_filter=AlwaysOnExemplarFilter(), time_ns=ticker(42, 10), normalize=normalize_exemplars
    )
    # Last offer wins the bucket, with time from instrument.time_ns (patched) and the first offer's stale ids.
    assert got == [[(ExemplarKey(0.6, 52, 0xABC, 0xDEF, None),)]]
