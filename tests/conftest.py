"""Shared fixtures: isolated OTel providers with in-memory readers, reset global state per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.util._once import Once

from otel_trading import recording, views


def reset_metrics_globals() -> None:
    """Forget the global MeterProvider so each test can set its own (the contrib test-util way)."""
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._PROXY_METER_PROVIDER = metrics_internal._ProxyMeterProvider()
    recording.reset_global_registry()


@pytest.fixture(autouse=True)
def _hermetic_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_* / OTEL_TRADING_* variable of the developer's shell leaks into a test."""
    for var in list(os.environ):
        if var.startswith("OTEL_"):
            monkeypatch.delenv(var)


@pytest.fixture(autouse=True)
def _reset_otel_globals() -> Iterator[None]:
    reset_metrics_globals()
    yield
    reset_metrics_globals()


@dataclass
class Metrics:
    """An isolated provider plus helpers to read what it collected."""

    provider: MeterProvider
    reader: InMemoryMetricReader
    bridged: bool

    def collect(self) -> dict[str, Any]:
        """{otel metric name: Metric} from one collection."""
        data = self.reader.get_metrics_data()
        out: dict[str, Any] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out[metric.name] = metric
        return out

    def points(self, name: str) -> list[Any]:
        metric = self.collect().get(name)
        return list(metric.data.data_points) if metric is not None else []

    def value(self, metric: str, /, **attrs: str) -> float | None:
        for p in self.points(metric):
            if dict(p.attributes) == attrs:
                assert isinstance(p, NumberDataPoint)
                return p.value
        return None

    def histogram(self, metric: str, /, **attrs: str) -> HistogramDataPoint | None:
        for p in self.points(metric):
            if dict(p.attributes) == attrs:
                assert isinstance(p, HistogramDataPoint)
                return p
        return None


def make_metrics(bridged: bool, temporality: AggregationTemporality | None = None) -> Metrics:
    kwargs: dict[str, Any] = {}
    if temporality is not None:
        from opentelemetry.sdk.metrics import Counter, Histogram, ObservableCounter

        kwargs["preferred_temporality"] = {Counter: temporality, Histogram: temporality, ObservableCounter: temporality}
    reader = InMemoryMetricReader(**kwargs)
    provider = MeterProvider(metric_readers=[reader], views=list(views()) if bridged else [])
    return Metrics(provider, reader, bridged)


@pytest.fixture(params=["bridged", "direct"])
def metrics(request: pytest.FixtureRequest) -> Iterator[Metrics]:
    """Parametrized over both histogram paths: otel-trading's views (fast) and a plain provider."""
    m = make_metrics(request.param == "bridged")
    yield m
    m.provider.shutdown()


@pytest.fixture
def global_metrics() -> Iterator[Metrics]:
    """An in-memory provider installed as the global one (components with no meter_provider=)."""
    m = make_metrics(True)
    otel_metrics.set_meter_provider(m.provider)
    yield m
    m.provider.shutdown()


@pytest.fixture
def instrumentor() -> Iterator[Any]:
    """A TradingInstrumentor that is uninstrumented again after the test."""
    from otel_trading.instrumentation import TradingInstrumentor

    inst = TradingInstrumentor()
    yield inst
    if inst.is_instrumented_by_opentelemetry:
        inst.uninstrument()


@pytest.fixture
def instrumented(metrics: Metrics, instrumentor: Any) -> Metrics:
    """``metrics`` with the instrumentor installed on its provider (no custom classes)."""
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    return metrics
