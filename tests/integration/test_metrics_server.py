"""The embedded /metrics endpoint, scraped over real HTTP and parsed with prometheus_client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from otel_trading import CircuitBreaker, ConfigurationError, EventBus, configure_metrics, start_metrics_server
from otel_trading.exporting import DEFAULT_METRICS_ADDR, MetricsServer
from otel_trading.metric_contract import documented_metrics

from ..realprocs import family_types, free_port, http_get, samples, scrape


@dataclass
class OrderFilled:
    qty: float


class Boom(Exception):
    pass


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    handle = start_metrics_server(port=0, addr="127.0.0.1")
    yield handle
    handle.close()


def _value(text: str, name: str, /, **labels: str) -> float:
    for (sample, lbls), value in samples(text).items():
        if sample == name and all(dict(lbls).get(k) == v for k, v in labels.items()):
            return value
    raise AssertionError(f"{name}{labels} not in scrape")


def _drive_breaker() -> CircuitBreaker:
    cb = CircuitBreaker(name="example", failure_threshold=3)
    for _ in range(5):
        cb.call(lambda: None)
    for _ in range(3):
        with pytest.raises(Boom):
            cb.call(lambda: (_ for _ in ()).throw(Boom()))
    return cb  # the state gauge reports live breakers only


def test_scrape_shows_breaker_counts_latency_and_state(server: MetricsServer) -> None:
    cb = _drive_breaker()
    text = scrape(server.url)
    assert _value(text, "circuit_breaker_successes_total", name="example") == 5
    assert _value(text, "circuit_breaker_failures_total", name="example") == 3
    assert _value(text, "circuit_breaker_latency_seconds_count", name="example") == 8
    assert _value(text, "circuit_breaker_latency_seconds_bucket", name="example", le="+Inf") == 8
    assert _value(text, "circuit_breaker_state", name="example") == int(cb.state) == 1


def test_scrape_shows_event_bus_metrics(server: MetricsServer) -> None:
    async def drive() -> EventBus:
        async with EventBus(name="main") as bus:
            bus.subscribe(OrderFilled, lambda e: None)
            for _ in range(4):
                await bus.publish(OrderFilled(1.0))
        return bus  # gauges report live buses only

    bus = asyncio.run(drive())
    text = scrape(server.url)
    assert _value(text, "event_bus_events_published_total", event_type="OrderFilled") == 4
    assert _value(text, "event_bus_events_processed_total", event_type="OrderFilled") == 4
    assert _value(text, "event_bus_processing_duration_seconds_count", event_type="OrderFilled") == 4
    assert _value(text, "event_bus_subscribers_gauge", event_type="OrderFilled") == 1
    assert _value(text, "event_bus_queue_size", bus="main") == bus.queue_size == 0


def test_every_documented_metric_has_the_guides_name_and_type(server: MetricsServer) -> None:
    cb = _drive_breaker()

    async def drive() -> EventBus:
        async with EventBus() as bus:
            bus.subscribe(OrderFilled, lambda e: None)
            await bus.publish(OrderFilled(1.0))
        return bus

    bus = asyncio.run(drive())
    types = family_types(scrape(server.url))
    assert (cb.name, bus.name) == ("example", "default")
    for spec in documented_metrics():
        assert types.get(spec.prometheus_name) == spec.prometheus_type, spec.prometheus_name


def test_server_reports_the_port_it_bound(server: MetricsServer) -> None:
    assert server.port > 0
    assert http_get(f"http://127.0.0.1:{server.port}/metrics")[0] == 200


def test_default_bind_address_is_loopback() -> None:
    assert DEFAULT_METRICS_ADDR == "127.0.0.1"
    with start_metrics_server(port=0) as handle:
        assert handle.addr == "127.0.0.1"


def test_env_host_and_port_are_used_when_arguments_are_omitted(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    with start_metrics_server() as handle:
        assert (handle.addr, handle.port) == ("127.0.0.1", port)


def test_port_in_use_is_an_error_naming_the_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"port {port}"):
            start_metrics_server(port=port, addr="127.0.0.1")


@pytest.mark.parametrize("port", [-1, 70000])
def test_invalid_port_is_a_value_error_naming_the_argument(port: int) -> None:
    with pytest.raises(ValueError, match="port"):
        start_metrics_server(port=port)


def test_close_stops_serving() -> None:
    handle = start_metrics_server(port=0, addr="127.0.0.1")
    url = handle.url
    handle.close()
    with pytest.raises(OSError):
        http_get(url, timeout=2)


def test_configure_metrics_lists_every_problem_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp,statsd")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "not a url")
    with pytest.raises(ConfigurationError) as info:
        configure_metrics()
    text = str(info.value)
    assert "statsd" in text and "carrier-pigeon" in text and "not a url" in text
    assert len(info.value.problems) == 3


def test_configure_metrics_prometheus_serves_the_global_components(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    handle = configure_metrics(prometheus_port=0, prometheus_addr="127.0.0.1")
    try:
        assert handle.server is not None
        CircuitBreaker(name="configured").call(lambda: None)
        assert _value(scrape(handle.server.url), "circuit_breaker_successes_total", name="configured") == 1
    finally:
        handle.shutdown()


def test_configure_metrics_none_builds_a_provider_without_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    handle = configure_metrics(set_global=False)
    try:
        assert handle.readers == () and handle.server is None
    finally:
        handle.shutdown()


def test_configure_metrics_rejects_an_unknown_temporality_preference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "sometimes")
    with pytest.raises(ConfigurationError, match=r"TEMPORALITY_PREFERENCE.*sometimes"):
        configure_metrics(set_global=False)


def test_configure_metrics_otlp_honours_the_delta_preference(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.metrics import Counter, Histogram
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    handle = configure_metrics(set_global=False)
    try:
        (reader,) = handle.readers
        preferred = {cls.__name__: t for cls, t in reader._exporter._preferred_temporality.items()}
        assert preferred[Counter.__name__] is preferred[Histogram.__name__] is AggregationTemporality.DELTA
    finally:
        handle.meter_provider.shutdown(timeout_millis=1000)


def test_exponential_histograms_asked_for_keep_explicit_buckets_on_metrics_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "base2_exponential_bucket_histogram")
    with caplog.at_level("WARNING", logger="otel_trading"):
        handle = configure_metrics(
            exporters="prometheus", prometheus_port=0, prometheus_addr="127.0.0.1", set_global=False
        )
    try:
        assert handle.server is not None
        CircuitBreaker("venue", meter_provider=handle.meter_provider).call(lambda: None)
        got = samples(scrape(handle.server.url))
        latency = {name: value for (name, labels), value in got.items() if ("name", "venue") in labels}
        assert latency["circuit_breaker_latency_seconds_count"] == 1
        assert "circuit_breaker_latency_seconds_bucket" in latency
    finally:
        handle.shutdown()
    warnings = [r.getMessage() for r in caplog.records if "drops them" in r.getMessage()]
    assert len(warnings) == 1
    assert "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION" in warnings[0]
