"""configure_metrics() honours the OTel histogram-aggregation variable and checks the exemplar filter."""

from __future__ import annotations

import io
import json

import pytest
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation

from otel_trading import CircuitBreaker
from otel_trading import metric_contract as mc
from otel_trading.errors import ConfigurationError
from otel_trading.exporting import configure_metrics
from otel_trading.settings import (
    OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION,
    OTEL_METRICS_EXEMPLAR_FILTER,
)

EXPONENTIAL = "base2_exponential_bucket_histogram"


def _console_latency_point() -> dict[str, object]:
    """Record one breaker call through configure_metrics(exporters="console") and return its latency point."""
    handle = configure_metrics(exporters="console", set_global=False)
    out = io.StringIO()
    try:
        (reader,) = handle.readers
        reader._exporter.out = out  # type: ignore[attr-defined]
        breaker = CircuitBreaker("venue", meter_provider=handle.meter_provider)
        breaker.call(lambda: None)
        handle.force_flush()
        printed = out.getvalue()
    finally:
        handle.shutdown()
    decoder, start, points = json.JSONDecoder(), 0, []
    while (start := printed.find("{", start)) >= 0:
        document, start = decoder.raw_decode(printed, start)
        for resource in document["resource_metrics"]:
            for scope in resource["scope_metrics"]:
                for metric in scope["metrics"]:
                    if metric["name"] == mc.BREAKER_LATENCY.otel_name:
                        points.extend(metric["data"]["data_points"])
    assert points, f"no {mc.BREAKER_LATENCY.otel_name} point in the console output"
    return dict(points[-1])


def test_histograms_keep_the_guides_explicit_buckets_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION, raising=False)
    point = _console_latency_point()
    assert point["explicit_bounds"] == list(mc.DURATION_BUCKETS)
    assert "scale" not in point


def test_the_variable_gives_push_readers_exponential_histograms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION, EXPONENTIAL)
    point = _console_latency_point()
    assert "explicit_bounds" not in point
    assert point["count"] == 1
    assert point["scale"] == 20


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_variable_is_matched_case_insensitively_on_both_otlp_protocols(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    monkeypatch.setenv(OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION, EXPONENTIAL.upper())
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://127.0.0.1:9/v1/metrics")
    handle = configure_metrics(exporters="otlp", set_global=False)
    try:
        (reader,) = handle.readers
        preferred = reader._instrument_class_aggregation.values()
        assert sum(isinstance(a, ExponentialBucketHistogramAggregation) for a in preferred) == 1
    finally:
        handle.meter_provider.shutdown(timeout_millis=100)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION, "exponential"),
        (OTEL_METRICS_EXEMPLAR_FILTER, "TRACE_BASED"),
        (OTEL_METRICS_EXEMPLAR_FILTER, "sometimes"),
    ],
)
def test_a_bad_histogram_or_exemplar_setting_is_a_start_up_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as raised:
        configure_metrics(exporters="console", set_global=False)
    assert variable in str(raised.value)
    assert repr(value) in str(raised.value)
