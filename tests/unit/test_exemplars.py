"""Exemplars from the fast path are the SDK's: same filter, same reservoirs, same values, instants and span ids."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics import Histogram as SdkHistogramInstrument
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext

from otel_trading import CircuitBreaker
from otel_trading import circuit_breaker as circuit_breaker_module
from otel_trading.metric_contract import DURATION_BUCKETS
from otel_trading.recording import exemplars as exemplars_module
from otel_trading.recording.exemplars import simple_fill_offset

from .sdk_reference import Batch, ExemplarKey, ReaderSpec, normalize_exemplars, run_sdk, span_context
from .timed_breaker import DurationClock, latency_points

ATTRIBUTES = {"name": "b"}
FILTERS = {
    "trace_based": TraceBasedExemplarFilter,
    "always_on": AlwaysOnExemplarFilter,
    "always_off": AlwaysOffExemplarFilter,
}
_TEMPORALITY = {"delta": AggregationTemporality.DELTA, "cumulative": AggregationTemporality.CUMULATIVE}
# One instant for every measurement: the SDK reads the clock for each measurement, otel-trading only for
# those its filter lets through, so a ticking clock would differ by design (instants: a test below).
INSTANT = 1_700_000_000_000_000_000


#: Every test here runs on both of the components' hot paths.
pytestmark = pytest.mark.usefixtures("on_each_hot_path")


def _in_context(sc: SpanContext | None) -> Any:
    return otel_context.attach(trace.set_span_in_context(NonRecordingSpan(sc))) if sc is not None else None


def run_ours(
    batches: Sequence[Batch], specs: Sequence[ReaderSpec], filter_name: str, seed: int
) -> list[list[list[tuple[ExemplarKey, ...]]]]:
    """The same measurements through an otel-trading breaker, each in its span context, collected after every batch."""
    # Explicit readers without boundaries: the instruments' advisory ones (the guide's) apply to each histogram.
    readers = [
        InMemoryMetricReader(
            preferred_temporality={SdkHistogramInstrument: _TEMPORALITY[s.temporality]},
            preferred_aggregation={
                SdkHistogramInstrument: ExplicitBucketHistogramAggregation()
                if s.aggregation == "explicit"
                else s.sdk_aggregation()
            },
        )
        for s in specs
    ]
    provider = MeterProvider(
        readers, resource=Resource.get_empty(), exemplar_filter=FILTERS[filter_name](), shutdown_on_exit=False
    )
    clock = DurationClock()
    saved = circuit_breaker_module.perf_counter, exemplars_module.time_ns
    circuit_breaker_module.perf_counter = clock  # type: ignore[assignment]
    exemplars_module.time_ns = lambda: INSTANT  # type: ignore[assignment]
    out: list[list[list[tuple[ExemplarKey, ...]]]] = [[] for _ in specs]
    try:
        breaker = CircuitBreaker("b", failure_threshold=10**9, meter_provider=provider)
        random.seed(seed)
        for batch in batches:
            clock.values = list(batch.values)
            for sc in batch.span_contexts or (None,) * len(batch.values):
                token = _in_context(sc)
                try:
                    breaker.call(lambda: None)
                finally:
                    if token is not None:
                        otel_context.detach(token)
            for r, reader in enumerate(readers):
                points = latency_points(reader)
                out[r].append([normalize_exemplars(p) for p in points])
    finally:
        circuit_breaker_module.perf_counter, exemplars_module.time_ns = saved  # type: ignore[assignment]
        provider.shutdown()
    return out


def _span_contexts(n: int) -> st.SearchStrategy[tuple[SpanContext | None, ...]]:
    one = st.one_of(
        st.none(),
        st.builds(
            span_context,
            st.integers(1, 2**128 - 1),
            st.integers(1, 2**64 - 1),
            sampled=st.booleans(),
        ),
    )
    return st.tuples(*([one] * n))


@st.composite
def traced_batches(draw: st.DrawFn) -> list[Batch]:
    values = st.one_of(st.just(0.0), st.floats(1e-7, 50.0))
    out = []
    for _ in range(draw(st.integers(1, 4))):
        batch = draw(st.lists(values, min_size=0, max_size=30))
        out.append(Batch(tuple(batch), ATTRIBUTES, draw(_span_contexts(len(batch)))))
    return out


_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _side_by_side(batches: list[Batch], specs: list[ReaderSpec], filter_name: str, seed: int) -> None:
    sdk = run_sdk(
        batches,
        specs,
        exemplar_filter=FILTERS[filter_name](),
        time_ns=lambda: INSTANT,
        random_seed=seed,
        normalize=normalize_exemplars,
    )
    assert run_ours(batches, specs, filter_name, seed) == sdk


@_SETTINGS
@given(traced_batches(), st.sampled_from(sorted(FILTERS)), st.integers(0, 2**32))
def test_explicit_bucket_exemplars_are_the_sdks_for_every_filter(
    batches: list[Batch], filter_name: str, seed: int
) -> None:
    specs = [
        ReaderSpec("delta", "explicit", boundaries=DURATION_BUCKETS),
        ReaderSpec("cumulative", "explicit", boundaries=DURATION_BUCKETS),
    ]
    _side_by_side(batches, specs, filter_name, seed)


@_SETTINGS
@given(traced_batches(), st.sampled_from(sorted(FILTERS)), st.integers(0, 2**32), st.sampled_from([4, 160]))
def test_exponential_exemplars_are_the_sdks_with_the_same_random_seed(
    batches: list[Batch], filter_name: str, seed: int, max_size: int
) -> None:
    # Under always_on, SDKs before 1.4x draw from the shared random even for the first offer to a size-1
    # reservoir, which otel-trading's own observable counters get at every collection: past the first
    # collection the seeded sequences part (the sampling stays uniform).
    assume(filter_name != "always_on" or len(batches) == 1 or simple_fill_offset() == 0)
    specs = [ReaderSpec("delta", max_size=max_size), ReaderSpec("cumulative")]
    _side_by_side(batches, specs, filter_name, seed)


def test_an_exemplar_carries_the_instant_its_duration_was_recorded() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider([reader], shutdown_on_exit=False)
    breaker = CircuitBreaker("b", meter_provider=provider)
    sc = span_context(7, 9)
    before = time.time_ns()
    token = _in_context(sc)
    try:
        breaker.call(lambda: None)
    finally:
        otel_context.detach(token)
    after = time.time_ns()
    (point,) = latency_points(reader)
    (exemplar,) = point.exemplars
    provider.shutdown()
    assert before <= exemplar.time_unix_nano <= after
    assert (exemplar.trace_id, exemplar.span_id) == (7, 9)


@pytest.mark.parametrize("filter_name", ["trace_based", "always_off"])
def test_calls_outside_any_span_take_the_inline_path_and_record_no_exemplar(filter_name: str) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider([reader], exemplar_filter=FILTERS[filter_name](), shutdown_on_exit=False)
    breaker = CircuitBreaker("b", meter_provider=provider)
    assert breaker._series is not None and breaker._series.fast
    for _ in range(50):
        breaker.call(lambda: None)
    (point,) = latency_points(reader)
    provider.shutdown()
    assert point.count == 50 and point.exemplars == []


def test_a_custom_exemplar_filter_records_through_the_sdk_histogram() -> None:
    class OddValues(TraceBasedExemplarFilter):
        pass

    reader = InMemoryMetricReader()
    provider = MeterProvider([reader], exemplar_filter=OddValues(), shutdown_on_exit=False)
    breaker = CircuitBreaker("b", meter_provider=provider)
    from otel_trading.recording import Binding

    assert breaker._series is not None and breaker._series.binding is Binding.DIRECT
    provider.shutdown()
