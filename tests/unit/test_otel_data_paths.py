"""Target 4: what leaves the process is genuine OTel metric data, on every standard path.

One workload with known durations (the components' clock is replaced by a fake that makes the k-th
timed span last exactly ``durations[k]``) is read through four readers of one MeterProvider: the
in-memory reader, the Prometheus reader's text, the ConsoleMetricExporter's JSON and the OTLP
protobuf (the OTLP exporters' shared encoder, no network). Every test runs on a provider with
otel-trading's views and on a plain one (both served from the rows), and on the DIRECT fallback
(every duration through the SDK Histogram): all three must agree. Delta temporality is checked
separately, on its own provider.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import prometheus_client
import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality as PbTemporality
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    Gauge,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    Sum,
)
from prometheus_client.parser import text_string_to_metric_families

from otel_trading import CircuitBreaker, CircuitOpenError, EventBus
from otel_trading import circuit_breaker as circuit_breaker_module
from otel_trading import event_bus as event_bus_module
from otel_trading.exporting import prometheus_reader
from otel_trading.metric_contract import DURATION_BUCKETS, METRICS_BY_KEY

from ..conftest import HISTOGRAM_PATHS, assert_binding, metrics_on_path, use_histogram_path

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}

# Two values sit exactly on bounds (10 us, 1 s): they belong to that bound's bucket ("le").
SUCCESS_DURATIONS = [0.00001, 0.00002, 0.0003, 0.004, 0.05, 0.6, 1.0, 1.5, 7.0]
FAILURE_DURATIONS = [0.000005, 45.0]
TICK_DURATIONS = [0.000004, 0.00003, 0.0002, 0.002, 0.02]
FILL_DURATIONS = [0.0009, 0.09]
LATENCIES = SUCCESS_DURATIONS + FAILURE_DURATIONS


class Boom(Exception):
    pass


class Tick:
    pass


class Fill:
    pass


class FakeClock:
    """A ``perf_counter`` stand-in: every span (a start read, then an end read) lasts the next duration.

    Spans start at 0.0 so ``end - start`` is exactly the duration, with no float rounding."""

    def __init__(self, durations: Sequence[float]) -> None:
        self._durations = list(durations)
        self._started = False

    def __call__(self) -> float:
        self._started = not self._started
        return 0.0 if self._started else self._durations.pop(0)


def expected_buckets(values: Sequence[float]) -> list[int]:
    """Bucket counts by the OTel rule (a value equal to a bound belongs to that bound's bucket)."""
    counts = [0] * (len(DURATION_BUCKETS) + 1)
    for v in values:
        counts[next((i for i, b in enumerate(DURATION_BUCKETS) if v <= b), len(DURATION_BUCKETS))] += 1
    return counts


class CapturingOtlpExporter(MetricExporter):
    """What the OTLP exporters do before the network: encode with the shared protobuf encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.payloads: list[bytes] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.payloads.append(encode_metrics(metrics_data).SerializeToString())
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


@dataclass
class Paths:
    """One provider, four readers, one workload; ``keep`` holds the components (gauges read them)."""

    memory: InMemoryMetricReader
    prometheus: prometheus_client.CollectorRegistry
    console_reader: PeriodicExportingMetricReader
    console_out: io.StringIO
    otlp_reader: PeriodicExportingMetricReader
    otlp: CapturingOtlpExporter
    keep: list[Any] = field(default_factory=list)

    def memory_points(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        data = self.memory.get_metrics_data()
        return _points_by_attributes(data, name)

    def memory_metric(self, name: str) -> Any:
        data = self.memory.get_metrics_data()
        assert data is not None
        return next(m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.name == name)

    def prometheus_samples(self) -> list[Any]:
        text = prometheus_client.generate_latest(self.prometheus).decode()
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def console_metrics(self) -> dict[str, dict[str, Any]]:
        self.console_reader.force_flush()
        last = self.console_out.getvalue().splitlines()[-1]
        return {
            m["name"]: m
            for rm in json.loads(last)["resource_metrics"]
            for sm in rm["scope_metrics"]
            for m in sm["metrics"]
        }

    def otlp_metrics(self) -> dict[str, Any]:
        self.otlp_reader.force_flush()
        request = ExportMetricsServiceRequest.FromString(self.otlp.payloads[-1])
        return {m.name: m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def _points_by_attributes(data: MetricsData | None, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    out: dict[tuple[tuple[str, Any], ...], Any] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for p in metric.data.data_points:
                        out[tuple(sorted(p.attributes.items()))] = p
    return out


def _key(**attrs: str) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(attrs.items()))


def _pb_attrs(point: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in point.attributes}


def _pb_point(metric: Any, kind: str, **attrs: str) -> Any:
    [point] = [p for p in getattr(metric, kind).data_points if _pb_attrs(p) == attrs]
    return point


def _run_breakers(provider: MeterProvider) -> list[Any]:
    venue_a = CircuitBreaker("venue-a", failure_threshold=5, meter_provider=provider)
    for _ in SUCCESS_DURATIONS:
        venue_a.call(lambda: None)
    for _ in FAILURE_DURATIONS:
        with pytest.raises(Boom):
            venue_a.call(_fail)
    venue_b = CircuitBreaker("venue-b", meter_provider=provider)
    venue_b.open()
    with pytest.raises(CircuitOpenError):
        venue_b.call(lambda: None)
    return [venue_a, venue_b]


def _fail() -> None:
    raise Boom()


def _run_bus(provider: MeterProvider) -> EventBus:
    def reject(event: Fill) -> None:
        raise Boom()

    async def main() -> EventBus:
        bus = EventBus(name="md", meter_provider=provider)
        bus.subscribe(Tick, lambda e: None)
        bus.subscribe(Fill, reject)
        await bus.start()
        for _ in TICK_DURATIONS:
            await bus.publish(Tick())
        for _ in FILL_DURATIONS:
            await bus.publish(Fill())
        await bus.stop()
        return bus

    return asyncio.run(main())


@pytest.fixture(params=HISTOGRAM_PATHS)
def paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Paths]:
    monkeypatch.setattr(circuit_breaker_module, "perf_counter", FakeClock(LATENCIES))
    monkeypatch.setattr(event_bus_module, "perf_counter", FakeClock(TICK_DURATIONS + FILL_DURATIONS))
    memory = InMemoryMetricReader()
    registry = prometheus_client.CollectorRegistry()
    console_out = io.StringIO()
    console_reader = PeriodicExportingMetricReader(
        ConsoleMetricExporter(out=console_out, formatter=lambda d: d.to_json(indent=None) + "\n"),
        export_interval_millis=3_600_000,
    )
    otlp = CapturingOtlpExporter()
    otlp_reader = PeriodicExportingMetricReader(otlp, export_interval_millis=3_600_000)
    provider = MeterProvider(
        metric_readers=[memory, prometheus_reader(registry), console_reader, otlp_reader],
        views=use_histogram_path(request.param, monkeypatch),
    )
    p = Paths(memory, registry, console_reader, console_out, otlp_reader, otlp)
    p.keep.extend(_run_breakers(provider))
    p.keep.append(_run_bus(provider))
    yield p
    try:
        assert_binding(provider, request.param)
    finally:
        provider.shutdown()


# -- in-memory reader ---------------------------------------------------------------------------------


def test_in_memory_breaker_counters_are_monotonic_cumulative_sums_with_exact_values(paths: Paths) -> None:
    metric = paths.memory_metric(N["breaker_successes"])
    assert isinstance(metric.data, Sum)
    assert metric.data.is_monotonic and metric.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    values = {
        key: {attrs: p.value for attrs, p in paths.memory_points(N[key]).items()}
        for key in ("breaker_successes", "breaker_failures", "breaker_rejected")
    }
    assert values["breaker_successes"][_key(name="venue-a")] == len(SUCCESS_DURATIONS)
    assert values["breaker_failures"][_key(name="venue-a")] == len(FAILURE_DURATIONS)
    assert values["breaker_rejected"][_key(name="venue-b")] == 1


def test_in_memory_state_gauge_and_transitions_report_the_forced_open_breaker(paths: Paths) -> None:
    assert isinstance(paths.memory_metric(N["breaker_state"]).data, Gauge)
    states = {attrs: p.value for attrs, p in paths.memory_points(N["breaker_state"]).items()}
    assert states == {_key(name="venue-a"): 0, _key(name="venue-b"): 1}
    transitions = paths.memory_points(N["breaker_transitions"])
    assert transitions[_key(name="venue-b", from_state="closed", to_state="open")].value == 1


def test_in_memory_latency_histogram_has_exact_count_sum_min_max_and_buckets(paths: Paths) -> None:
    assert isinstance(paths.memory_metric(N["breaker_latency"]).data, Histogram)
    point = paths.memory_points(N["breaker_latency"])[_key(name="venue-a")]
    assert isinstance(point, HistogramDataPoint)
    assert point.count == len(LATENCIES)
    assert point.sum == pytest.approx(sum(LATENCIES), rel=1e-12)
    assert (point.min, point.max) == (min(LATENCIES), max(LATENCIES))
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS
    assert list(point.bucket_counts) == expected_buckets(LATENCIES)


def test_in_memory_rejected_calls_leave_no_latency_point(paths: Paths) -> None:
    assert _key(name="venue-b") not in paths.memory_points(N["breaker_latency"])


def test_in_memory_bus_counters_and_gauges_are_exact_per_event_type(paths: Paths) -> None:
    def values(key: str) -> dict[Any, Any]:
        return {attrs: p.value for attrs, p in paths.memory_points(N[key]).items()}

    tick, fill = _key(event_type="Tick"), _key(event_type="Fill")
    assert values("bus_published") == {tick: len(TICK_DURATIONS), fill: len(FILL_DURATIONS)}
    assert values("bus_processed") == {tick: len(TICK_DURATIONS), fill: len(FILL_DURATIONS)}
    assert values("bus_handler_errors")[fill] == len(FILL_DURATIONS)
    assert values("bus_handler_errors").get(tick, 0) == 0
    assert values("bus_subscribers") == {tick: 1, fill: 1}
    assert values("bus_queue_size") == {_key(bus="md"): 0}


def test_in_memory_bus_duration_histograms_are_exact_per_event_type(paths: Paths) -> None:
    points = paths.memory_points(N["bus_processing_duration"])
    for event_type, durations in (("Tick", TICK_DURATIONS), ("Fill", FILL_DURATIONS)):
        point = points[_key(event_type=event_type)]
        assert point.count == len(durations)
        assert point.sum == pytest.approx(sum(durations), rel=1e-12)
        assert list(point.bucket_counts) == expected_buckets(durations)


# -- Prometheus reader ----------------------------------------------------------------------------------


def _prom(samples: list[Any], sample: str, /, **labels: str) -> float:
    [value] = [s.value for s in samples if s.name == sample and labels.items() <= s.labels.items()]
    return float(value)


def test_prometheus_text_has_the_guides_counter_and_gauge_names_with_exact_values(paths: Paths) -> None:
    samples = paths.prometheus_samples()
    assert _prom(samples, "circuit_breaker_successes_total", name="venue-a") == len(SUCCESS_DURATIONS)
    assert _prom(samples, "circuit_breaker_failures_total", name="venue-a") == len(FAILURE_DURATIONS)
    assert _prom(samples, "circuit_breaker_state", name="venue-b") == 1
    assert _prom(samples, "event_bus_events_published_total", event_type="Tick") == len(TICK_DURATIONS)
    assert _prom(samples, "event_bus_events_processed_total", event_type="Fill") == len(FILL_DURATIONS)


def test_prometheus_text_histogram_buckets_are_cumulative_count_and_sum_exact(paths: Paths) -> None:
    samples = paths.prometheus_samples()
    name = "circuit_breaker_latency_seconds"
    buckets = {
        float(s.labels["le"]): s.value
        for s in samples
        if s.name == f"{name}_bucket" and s.labels.get("name") == "venue-a"
    }
    bounds = [*DURATION_BUCKETS, float("inf")]
    assert sorted(buckets) == bounds
    assert [buckets[b] for b in bounds] == list(accumulate(expected_buckets(LATENCIES)))
    assert _prom(samples, f"{name}_count", name="venue-a") == len(LATENCIES)
    assert _prom(samples, f"{name}_sum", name="venue-a") == pytest.approx(sum(LATENCIES), rel=1e-12)


# -- ConsoleMetricExporter ------------------------------------------------------------------------------


def test_console_exporter_json_has_exact_sums_and_histogram(paths: Paths) -> None:
    metrics = paths.console_metrics()
    successes = metrics[N["breaker_successes"]]["data"]
    assert successes["is_monotonic"] is True
    assert successes["aggregation_temporality"] == AggregationTemporality.CUMULATIVE.value
    by_name = {p["attributes"]["name"]: p for p in successes["data_points"]}
    assert by_name["venue-a"]["value"] == len(SUCCESS_DURATIONS)
    [hist] = [p for p in metrics[N["breaker_latency"]]["data"]["data_points"] if p["attributes"] == {"name": "venue-a"}]
    assert hist["count"] == len(LATENCIES)
    assert hist["sum"] == pytest.approx(sum(LATENCIES), rel=1e-12)
    assert hist["bucket_counts"] == expected_buckets(LATENCIES)
    assert hist["explicit_bounds"] == list(DURATION_BUCKETS)


# -- OTLP protobuf ---------------------------------------------------------------------------------------


def test_otlp_protobuf_sums_are_monotonic_cumulative_with_exact_values(paths: Paths) -> None:
    metrics = paths.otlp_metrics()
    successes = metrics[N["breaker_successes"]]
    assert successes.WhichOneof("data") == "sum"
    assert successes.sum.is_monotonic
    assert successes.sum.aggregation_temporality == PbTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    point = _pb_point(successes, "sum", name="venue-a")
    assert (point.as_int or point.as_double) == len(SUCCESS_DURATIONS)
    published = _pb_point(metrics[N["bus_published"]], "sum", event_type="Tick")
    assert (published.as_int or published.as_double) == len(TICK_DURATIONS)


def test_otlp_protobuf_state_is_a_gauge(paths: Paths) -> None:
    state = paths.otlp_metrics()[N["breaker_state"]]
    assert state.WhichOneof("data") == "gauge"
    point = _pb_point(state, "gauge", name="venue-b")
    assert (point.as_int or point.as_double) == 1


def test_otlp_protobuf_histogram_has_exact_count_sum_bounds_and_buckets(paths: Paths) -> None:
    latency = paths.otlp_metrics()[N["breaker_latency"]]
    assert latency.WhichOneof("data") == "histogram"
    assert latency.histogram.aggregation_temporality == PbTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    point = _pb_point(latency, "histogram", name="venue-a")
    assert point.count == len(LATENCIES)
    assert point.sum == pytest.approx(sum(LATENCIES), rel=1e-12)
    assert list(point.explicit_bounds) == list(DURATION_BUCKETS)
    assert list(point.bucket_counts) == expected_buckets(LATENCIES)
    assert (point.min, point.max) == (min(LATENCIES), max(LATENCIES))


# -- delta temporality ----------------------------------------------------------------------------------


@pytest.fixture(params=HISTOGRAM_PATHS)
def delta(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(circuit_breaker_module, "perf_counter", FakeClock(INTERVAL_1 + INTERVAL_2))
    m = metrics_on_path(request.param, monkeypatch, AggregationTemporality.DELTA)
    yield m
    try:
        assert_binding(m.provider, m.path)
    finally:
        m.provider.shutdown()


INTERVAL_1 = [0.00002, 0.004, 0.6]
INTERVAL_2 = [0.0003, 7.0]


def _calls(cb: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        cb.call(lambda: None)


def test_delta_reader_gets_each_intervals_own_histogram(delta: Any) -> None:
    cb = CircuitBreaker("venue", meter_provider=delta.provider)
    _calls(cb, len(INTERVAL_1))
    first = delta.histogram(N["breaker_latency"], name="venue")
    _calls(cb, len(INTERVAL_2))
    second = delta.histogram(N["breaker_latency"], name="venue")
    for point, values in ((first, INTERVAL_1), (second, INTERVAL_2)):
        assert point is not None
        assert point.count == len(values)
        assert point.sum == pytest.approx(sum(values), rel=1e-12)
        assert list(point.bucket_counts) == expected_buckets(values)
        assert (point.min, point.max) == (min(values), max(values))
    assert second.start_time_unix_nano >= first.time_unix_nano


def test_delta_reader_gets_each_intervals_counter_increment(delta: Any) -> None:
    cb = CircuitBreaker("venue", meter_provider=delta.provider)
    _calls(cb, len(INTERVAL_1))
    first = delta.value(N["breaker_successes"], name="venue")
    _calls(cb, len(INTERVAL_2))
    second = delta.value(N["breaker_successes"], name="venue")
    assert (first, second) == (len(INTERVAL_1), len(INTERVAL_2))


def test_delta_reader_reports_no_histogram_point_for_an_idle_interval(delta: Any) -> None:
    cb = CircuitBreaker("venue", meter_provider=delta.provider)
    _calls(cb, len(INTERVAL_1))
    assert delta.histogram(N["breaker_latency"], name="venue") is not None
    assert delta.histogram(N["breaker_latency"], name="venue") is None


def test_otlp_encoding_of_a_delta_collection_marks_histograms_and_sums_delta(delta: Any) -> None:
    cb = CircuitBreaker("venue", meter_provider=delta.provider)
    _calls(cb, len(INTERVAL_1))
    delta.collect()
    _calls(cb, len(INTERVAL_2))
    request = encode_metrics(delta.reader.get_metrics_data())
    metrics = {m.name: m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    latency, successes = metrics[N["breaker_latency"]], metrics[N["breaker_successes"]]
    assert latency.histogram.aggregation_temporality == PbTemporality.AGGREGATION_TEMPORALITY_DELTA
    assert successes.sum.aggregation_temporality == PbTemporality.AGGREGATION_TEMPORALITY_DELTA
    point = _pb_point(latency, "histogram", name="venue")
    assert point.count == len(INTERVAL_2)
    assert list(point.bucket_counts) == expected_buckets(INTERVAL_2)
