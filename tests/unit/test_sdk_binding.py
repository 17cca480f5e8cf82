"""The one private SDK hook behind fast histograms, checked against the SDK it runs on.

Histograms are served to every reader from the rows by swapping the SDK's per-(reader, instrument)
stream for a ``RowsHistogramStream``. ``rows_supported()`` self-tests that structure once; where it
fails, or where a provider's views/readers want something the rows cannot give, every duration goes
through the SDK Histogram instead (``Binding.DIRECT``): slower, never wrong. If an SDK upgrade
changes the private structure, these fail before users see wrong data.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import Histogram as SdkHistogramInstrument
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogramDataPoint,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
)
from opentelemetry.sdk.metrics.view import (
    DropAggregation,
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)

from otel_trading import CircuitBreaker, views
from otel_trading import circuit_breaker as circuit_breaker_module
from otel_trading.metric_contract import (
    BREAKER_LATENCY,
    BREAKER_SUCCESSES,
    DURATION_BUCKETS,
    LOOP_LAG_BUCKETS,
    METRICS,
    InstrumentKind,
)
from otel_trading.recording import Binding, registry_for, sdk_binding
from otel_trading.recording.sdk_binding import RowsHistogramStream

from ..conftest import HISTOGRAM_PATHS, Metrics, metrics_on_path

LATENCY = BREAKER_LATENCY.otel_name
SUCCESSES = BREAKER_SUCCESSES.otel_name
# Two values sit exactly on bounds (10 us, 1 s): they belong to that bound's bucket ("le").
VALUES = [0.00001, 0.00002, 0.0003, 0.004, 0.05, 0.6, 1.0, 1.5, 7.0, 45.0]


class FakeClock:
    """A ``perf_counter`` stand-in: every span (a start read, then an end read) lasts the next value."""

    def __init__(self, durations: Sequence[float]) -> None:
        self._durations = list(durations)
        self._started = False

    def __call__(self) -> float:
        self._started = not self._started
        return 0.0 if self._started else self._durations.pop(0)


def expected_buckets(values: Sequence[float], bounds: Sequence[float] = DURATION_BUCKETS) -> list[int]:
    counts = [0] * (len(bounds) + 1)
    for v in values:
        counts[next((i for i, b in enumerate(bounds) if v <= b), len(bounds))] += 1
    return counts


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    if data is None:
        return []
    return [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points
    ]


def timed_calls(monkeypatch: pytest.MonkeyPatch, breaker: CircuitBreaker, values: Sequence[float]) -> None:
    """``len(values)`` successful calls through ``breaker``, the k-th lasting exactly ``values[k]``."""
    monkeypatch.setattr(circuit_breaker_module, "perf_counter", FakeClock(values))
    for _ in values:
        breaker.call(lambda: None)


@pytest.fixture
def fresh_self_test() -> Iterator[None]:
    """Forget the cached self-test verdict before and after the test."""
    sdk_binding.rows_supported.cache_clear()
    yield
    sdk_binding.rows_supported.cache_clear()


# -- the installed SDK -----------------------------------------------------------------------------


def test_installed_sdk_is_inside_the_range_pyproject_declares() -> None:
    # The SDK is a range, not one minor line: the self-test below guards the private structure.
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the test extra brings tomli there
        import tomli as tomllib
    from packaging.requirements import Requirement

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    (requirement,) = [r for r in map(Requirement, dependencies) if r.name == "opentelemetry-sdk"]
    version = importlib.metadata.version("opentelemetry-sdk")
    assert requirement.specifier.contains(version), f"opentelemetry-sdk {version} is outside {requirement}"
    assert sdk_binding.sdk_version() == version


def test_self_test_passes_on_the_installed_sdk(fresh_self_test: None, caplog: pytest.LogCaptureFixture) -> None:
    sdk_binding._self_test()  # raises on any mismatch with the private structure
    with caplog.at_level(logging.WARNING, logger="otel_trading.recording"):
        assert sdk_binding.rows_supported() is True
    assert not caplog.records


def test_every_reader_gets_a_rows_stream_in_place_of_the_sdk_stream() -> None:
    readers = [InMemoryMetricReader(), InMemoryMetricReader()]
    provider = MeterProvider(metric_readers=readers)
    try:
        breaker = CircuitBreaker("b", meter_provider=provider)
        breaker.call(lambda: None)
        assert registry_for(provider).binding is Binding.ROWS
        for reader in readers:
            assert [p.count for p in points(reader, LATENCY)] == [1]
        instrument = registry_for(provider)._histograms["breaker"]
        for storage in sdk_binding._storages(provider):
            matches = storage._instrument_view_instrument_matches[instrument]
            assert len(matches) == 1 and isinstance(matches[0], RowsHistogramStream)
        # install() is idempotent: a second pass finds nothing left to replace.
        assert sdk_binding.install(provider, instrument) == []
    finally:
        provider.shutdown()


def test_a_plain_provider_and_one_with_our_views_are_compatible() -> None:
    for view_list in ([], list(views())):
        provider = MeterProvider(metric_readers=[InMemoryMetricReader()], views=view_list)
        try:
            histogram = provider.get_meter("otel_trading").create_histogram(LATENCY, unit="s")
            assert sdk_binding.incompatibility(provider, histogram) is None
        finally:
            provider.shutdown()


def test_views_cover_every_histogram_in_the_contract() -> None:
    names = sorted(v._instrument_name for v in views())
    assert names == sorted(m.otel_name for m in METRICS if m.kind is InstrumentKind.HISTOGRAM)
    buckets = {m.otel_name: m.buckets for m in METRICS}
    for view in views():
        assert isinstance(view._aggregation, ExplicitBucketHistogramAggregation)
        # Each histogram's own buckets: the durations' and the event-loop lag's.
        assert tuple(view._aggregation._boundaries) == buckets[view._instrument_name]
    assert {buckets[v._instrument_name] for v in views()} == {DURATION_BUCKETS, LOOP_LAG_BUCKETS}


# -- the fallback: the self-test fails ----------------------------------------------------------------


def test_failed_self_test_falls_back_to_direct_with_one_warning_naming_the_sdk_version(
    fresh_self_test: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise AttributeError("'MetricReaderStorage' object has no attribute '_lock'")

    monkeypatch.setattr(sdk_binding, "_self_test", broken)
    providers: list[MeterProvider] = []
    readers: list[InMemoryMetricReader] = []
    with caplog.at_level(logging.WARNING, logger="otel_trading.recording"):
        for i in range(2):  # a second provider must not warn again: the verdict is per process
            reader = InMemoryMetricReader()
            provider = MeterProvider(metric_readers=[reader])
            providers.append(provider)
            readers.append(reader)
            breaker = CircuitBreaker(f"b{i}", meter_provider=provider)
            assert breaker._series is not None
            assert breaker._series.binding is Binding.DIRECT and not breaker._series.fast
            timed_calls(monkeypatch, breaker, VALUES)
    try:
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        message = warnings[0].getMessage()
        assert importlib.metadata.version("opentelemetry-sdk") in message
        assert "AttributeError" in message
        for i, reader in enumerate(readers):
            (point,) = points(reader, LATENCY)
            assert dict(point.attributes) == {"name": f"b{i}"}
            assert point.count == len(VALUES)
            assert point.sum == pytest.approx(sum(VALUES), rel=1e-12)
            assert list(point.bucket_counts) == expected_buckets(VALUES)
            assert (point.min, point.max) == (min(VALUES), max(VALUES))
            assert [p.value for p in points(reader, SUCCESSES)] == [len(VALUES)]
        # Nothing was swapped into the readers: the SDK's own streams record.
        for provider in providers:
            for storage in sdk_binding._storages(provider):
                for matches in storage._instrument_view_instrument_matches.values():
                    assert not any(isinstance(m, RowsHistogramStream) for m in matches)
    finally:
        for provider in providers:
            provider.shutdown()


def test_failed_self_test_falls_back_for_a_pending_global_registry_too(
    fresh_self_test: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry import metrics as otel_metrics

    monkeypatch.setattr(sdk_binding, "_self_test", lambda: 1 / 0)
    breaker = CircuitBreaker("early")  # no global provider yet: PENDING keeps the durations
    assert breaker._series is not None and breaker._series.binding is Binding.PENDING
    timed_calls(monkeypatch, breaker, VALUES[:4])
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel_metrics.set_meter_provider(provider)
    try:
        timed_calls(monkeypatch, breaker, VALUES[4:])
        (point,) = points(reader, LATENCY)
        assert breaker._series.binding is Binding.DIRECT
        assert point.count == len(VALUES)
        assert list(point.bucket_counts) == expected_buckets(VALUES)
        assert (point.min, point.max) == (min(VALUES), max(VALUES))
        assert [p.value for p in points(reader, SUCCESSES)] == [len(VALUES)]
    finally:
        provider.shutdown()


# -- incompatible views and readers -------------------------------------------------------------------


def _provider(view_list: Sequence[View] = (), **reader_kw: Any) -> tuple[MeterProvider, InMemoryMetricReader]:
    reader = InMemoryMetricReader(**reader_kw)
    return MeterProvider(metric_readers=[reader], views=list(view_list)), reader


def test_a_view_with_other_bucket_bounds_gets_direct_recording_with_exact_data(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bounds = [0.001, 0.1, 1.0, 10.0]
    provider, reader = _provider(
        [View(instrument_name=LATENCY, aggregation=ExplicitBucketHistogramAggregation(bounds))]
    )
    try:
        instrument = provider.get_meter("probe").create_histogram(LATENCY)
        reason = sdk_binding.incompatibility(provider, instrument)
        assert reason is not None and "ExplicitBucketHistogramAggregation" in reason
        with caplog.at_level(logging.WARNING, logger="otel_trading.recording"):
            breaker = CircuitBreaker("b", meter_provider=provider)
        assert breaker._series is not None and breaker._series.binding is Binding.DIRECT
        assert any(LATENCY in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        timed_calls(monkeypatch, breaker, VALUES)
        (point,) = points(reader, LATENCY)
        assert tuple(point.explicit_bounds) == tuple(bounds)  # the application's view wins
        assert list(point.bucket_counts) == expected_buckets(VALUES, bounds)
        assert point.count == len(VALUES)
        assert point.sum == pytest.approx(sum(VALUES), rel=1e-12)
        assert (point.min, point.max) == (min(VALUES), max(VALUES))
    finally:
        provider.shutdown()


def test_a_view_keeping_only_some_attributes_gets_direct_recording_with_exact_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, reader = _provider([View(instrument_name=LATENCY, attribute_keys=set())])
    try:
        instrument = provider.get_meter("probe").create_histogram(LATENCY)
        reason = sdk_binding.incompatibility(provider, instrument)
        assert reason is not None and "attributes" in reason
        a = CircuitBreaker("a", meter_provider=provider)
        b = CircuitBreaker("b", meter_provider=provider)
        assert a._series is not None and a._series.binding is Binding.DIRECT
        timed_calls(monkeypatch, a, VALUES[:6])
        timed_calls(monkeypatch, b, VALUES[6:])
        (point,) = points(reader, LATENCY)
        assert dict(point.attributes) == {}  # the view merged both names, as it asked
        assert point.count == len(VALUES)
        assert list(point.bucket_counts) == expected_buckets(VALUES)
        assert (point.min, point.max) == (min(VALUES), max(VALUES))
        # Counters are not touched by a histogram view.
        assert sorted(p.value for p in points(reader, SUCCESSES)) == [4, 6]
    finally:
        provider.shutdown()


def test_a_reader_preferring_exponential_histograms_is_served_exponential_buckets_from_the_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, reader = _provider(
        preferred_aggregation={SdkHistogramInstrument: ExponentialBucketHistogramAggregation()}
    )
    try:
        breaker = CircuitBreaker("b", meter_provider=provider)
        assert breaker._series is not None and breaker._series.binding is Binding.ROWS
        assert breaker._series.exponential == (20, 160)
        timed_calls(monkeypatch, breaker, VALUES)
        (point,) = points(reader, LATENCY)
        assert isinstance(point, ExponentialHistogramDataPoint)
        assert point.count == len(VALUES) == sum(point.positive.bucket_counts)
        assert (point.min, point.max) == (min(VALUES), max(VALUES))
    finally:
        provider.shutdown()


@pytest.mark.parametrize(("max_size", "max_scale"), [(161, 20), (160, 0), (1000, 20)])
def test_an_exponential_aggregation_outside_the_sdk_defaults_gets_direct_recording(
    monkeypatch: pytest.MonkeyPatch, max_size: int, max_scale: int
) -> None:
    provider, reader = _provider(
        preferred_aggregation={SdkHistogramInstrument: ExponentialBucketHistogramAggregation(max_size, max_scale)}
    )
    try:
        breaker = CircuitBreaker("b", meter_provider=provider)
        assert breaker._series is not None and breaker._series.binding is Binding.DIRECT
        timed_calls(monkeypatch, breaker, VALUES)
        (point,) = points(reader, LATENCY)
        assert isinstance(point, ExponentialHistogramDataPoint)
        assert point.count == len(VALUES)
    finally:
        provider.shutdown()


def test_a_view_dropping_our_histogram_keeps_it_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, reader = _provider([View(instrument_name=LATENCY, aggregation=DropAggregation())])
    try:
        breaker = CircuitBreaker("b", meter_provider=provider)
        assert breaker._series is not None and breaker._series.binding is Binding.ROWS
        for _ in range(3):  # every collection re-installs streams: still nothing for a dropped one
            timed_calls(monkeypatch, breaker, VALUES[:2])
            assert points(reader, LATENCY) == []
        assert [p.value for p in points(reader, SUCCESSES)] == [6]
    finally:
        provider.shutdown()


def test_a_view_renaming_our_histogram_is_served_under_the_new_name(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, reader = _provider([View(instrument_name=LATENCY, name="venue_latency")])
    try:
        breaker = CircuitBreaker("b", meter_provider=provider)
        assert breaker._series is not None and breaker._series.binding is Binding.ROWS
        timed_calls(monkeypatch, breaker, VALUES)
        assert points(reader, LATENCY) == []
        data = reader.get_metrics_data()
        renamed = [
            m
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == "venue_latency"
        ]
        (point,) = renamed[0].data.data_points
        assert point.count == len(VALUES) and list(point.bucket_counts) == expected_buckets(VALUES)
    finally:
        provider.shutdown()


# -- the paths agree ---------------------------------------------------------------------------------------


def test_all_paths_put_the_same_values_in_the_same_buckets() -> None:
    found: dict[str, HistogramDataPoint] = {}
    for path in HISTOGRAM_PATHS:
        with pytest.MonkeyPatch.context() as mp:
            m = metrics_on_path(path, mp)
            try:
                breaker = CircuitBreaker("b", meter_provider=m.provider)
                assert breaker._series is not None
                expected = Binding.DIRECT if path == "direct_fallback" else Binding.ROWS
                assert breaker._series.binding is expected
                timed_calls(mp, breaker, VALUES)
                point = m.histogram(LATENCY, name="b")
                assert point is not None
                found[path] = point
            finally:
                m.provider.shutdown()
    for path, point in found.items():
        assert list(point.bucket_counts) == expected_buckets(VALUES), path
        assert point.count == len(VALUES), path
        assert point.sum == pytest.approx(sum(VALUES), rel=1e-12), path
        assert (point.min, point.max) == (min(VALUES), max(VALUES)), path
        assert tuple(point.explicit_bounds) == DURATION_BUCKETS, path
    assert len({(tuple(p.bucket_counts), p.count, p.min, p.max) for p in found.values()}) == 1


@pytest.fixture(params=HISTOGRAM_PATHS)
def delta(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Metrics]:
    m = metrics_on_path(request.param, monkeypatch, AggregationTemporality.DELTA)
    yield m
    m.provider.shutdown()


def test_delta_readers_get_per_interval_counts(delta: Metrics) -> None:
    cb = CircuitBreaker(name="d", meter_provider=delta.provider)
    for _ in range(3):
        cb.call(lambda: None)
    first = delta.collect()[LATENCY]
    assert isinstance(first.data, Histogram)
    assert first.data.aggregation_temporality is AggregationTemporality.DELTA
    assert first.data.data_points[0].count == 3
    for _ in range(2):
        cb.call(lambda: None)
    second = delta.collect()[LATENCY]
    assert second.data.data_points[0].count == 2
    assert second.data.data_points[0].start_time_unix_nano >= first.data.data_points[0].time_unix_nano


def test_delta_interval_with_no_observations_exports_no_point(delta: Metrics) -> None:
    cb = CircuitBreaker(name="idle", meter_provider=delta.provider)
    cb.call(lambda: None)
    delta.collect()
    assert LATENCY not in delta.collect()
