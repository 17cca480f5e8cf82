"""Shared fixtures: isolated OTel providers with in-memory readers, reset global state per test."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
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
from otel_trading.metric_contract import METRICS_BY_KEY
from otel_trading.recording import Binding, sdk_binding

#: The histogram paths every data-path test runs on (the ``metrics`` fixture's params):
#: - "views": a provider with otel_trading.views() -- the rows are served to its readers;
#: - "no_views": a plain provider, as opentelemetry-instrument or an app builds it -- same fast path;
#: - "direct_fallback": the fast path refused (as on an SDK the self-test rejects), so every duration
#:   is recorded through the SDK Histogram (Binding.DIRECT).
HISTOGRAM_PATHS = ("views", "no_views", "direct_fallback")
_N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}
EXPECTED_BINDING = {"views": Binding.ROWS, "no_views": Binding.ROWS, "direct_fallback": Binding.DIRECT}


def use_histogram_path(path: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Prepare ``path`` (one of HISTOGRAM_PATHS); returns the views its provider must get.

    Call before any component registers with the provider: a registry picks its binding once.
    """
    assert path in HISTOGRAM_PATHS, path
    if path == "direct_fallback":
        # rows_supported() is lru_cached; can_serve() looks the module attribute up at each call.
        monkeypatch.setattr(sdk_binding, "rows_supported", lambda: False)
    return list(views()) if path == "views" else []


def assert_binding(provider: Any, path: str) -> None:
    """The registry of ``provider`` (if a component made one) took ``path``'s binding."""
    registry = recording.registry._registries_get(provider)
    if registry is None or not registry._histograms:
        return  # nothing registered, or every histogram disabled: no binding to check
    expected = EXPECTED_BINDING[path]
    assert registry.binding is expected, f"{path}: registry bound {registry.binding}, expected {expected}"
    for series in (*registry.breaker_series.values(), *registry.event_series.values()):
        assert series.binding is expected, f"{path}: {series.attributes} bound {series.binding}"
        assert series.fast is (expected is Binding.ROWS)


def run_in_threads(count: int, worker: Callable[[], object]) -> None:
    """Run ``worker`` in ``count`` threads at once and wait for every one to end."""
    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# -- helpers of the library instrumentation tests ---------------------------------------------------


def breaker_counts(m: Metrics, name: str) -> tuple[Any, Any, Any]:
    """(successes, failures, rejected) of breaker ``name``."""
    return (
        m.value(_N["breaker_successes"], name=name),
        m.value(_N["breaker_failures"], name=name),
        m.value(_N["breaker_rejected"], name=name),
    )


def breaker_latency(m: Metrics, name: str) -> tuple[int, float]:
    """(count, sum) of breaker ``name``'s latency histogram; (0, 0.0) when it has none."""
    point = m.histogram(_N["breaker_latency"], name=name)
    return (point.count, point.sum) if point is not None else (0, 0.0)


def breaker_transitions(m: Metrics, name: str) -> dict[tuple[str, str], float]:
    """{(from_state, to_state): count} of breaker ``name``."""
    return {
        (p.attributes["from_state"], p.attributes["to_state"]): p.value
        for p in m.points(_N["breaker_transitions"])
        if p.attributes["name"] == name
    }


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
    #: One of HISTOGRAM_PATHS ("views" or "no_views" when made by make_metrics directly).
    path: str

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


def make_metrics(with_views: bool = True, temporality: AggregationTemporality | None = None) -> Metrics:
    """A provider with one in-memory reader, with or without otel_trading.views() (both fast)."""
    return _make_metrics(list(views()) if with_views else [], "views" if with_views else "no_views", temporality)


def _make_metrics(view_list: list[Any], path: str, temporality: AggregationTemporality | None = None) -> Metrics:
    kwargs: dict[str, Any] = {}
    if temporality is not None:
        from opentelemetry.sdk.metrics import Counter, Histogram, ObservableCounter

        kwargs["preferred_temporality"] = {Counter: temporality, Histogram: temporality, ObservableCounter: temporality}
    reader = InMemoryMetricReader(**kwargs)
    provider = MeterProvider(metric_readers=[reader], views=view_list)
    return Metrics(provider, reader, path)


def metrics_on_path(
    path: str, monkeypatch: pytest.MonkeyPatch, temporality: AggregationTemporality | None = None
) -> Metrics:
    """A ``Metrics`` whose histograms take ``path`` (one of HISTOGRAM_PATHS)."""
    return _make_metrics(use_histogram_path(path, monkeypatch), path, temporality)


@pytest.fixture(params=HISTOGRAM_PATHS)
def metrics(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Metrics]:
    """Parametrized over the histogram paths: views, no views (both served from the rows) and the
    DIRECT fallback (every duration through the SDK Histogram). Each must give the same data."""
    m = metrics_on_path(request.param, monkeypatch)
    yield m
    try:
        assert_binding(m.provider, m.path)
    finally:
        m.provider.shutdown()


@pytest.fixture
def global_metrics() -> Iterator[Metrics]:
    """An in-memory provider installed as the global one (components with no meter_provider=)."""
    m = make_metrics(True)
    otel_metrics.set_meter_provider(m.provider)
    yield m
    m.provider.shutdown()


#: The hot paths the library instrumentations (pybreaker, circuitbreaker, purgatory, pyee) and the own
#: components run on (the ``hot_path`` fixture's params): "compiled", each home's C module
#: otel_trading.instrumentation.<library>._hooks and the components' otel_trading.recording._fast_rows;
#: "python", their pure-Python twins and inline updates (what a build without a C compiler, or
#: OTEL_TRADING_PURE_PYTHON=true, uses). Each must give the same data and the same library behaviour.
HOT_PATHS = ("compiled", "python")


def require_compiled_hot_paths() -> None:
    """Skip (locally) or fail (in CI, which builds them) unless every compiled hot path is in use."""
    from otel_trading.instrumentation._core import hot_path
    from otel_trading.recording import fast_rows

    why = hot_path.pure_python_reason() or fast_rows.why_not
    if why is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the compiled hot paths are not in use ({why}); CI installs them with `pip install -e .`")
        pytest.skip(f"the compiled hot paths are not in use here: {why}")


def use_hot_path(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make instrumentations installed from now on, and the own components, use ``path`` (one of HOT_PATHS)."""
    from otel_trading import circuit_breaker, event_bus
    from otel_trading.instrumentation._core import hot_path
    from otel_trading.recording import fast_rows, series

    assert path in HOT_PATHS, path
    compiled = path == "compiled"
    if compiled:
        require_compiled_hot_paths()
    else:
        monkeypatch.setattr(hot_path, "enabled", False)
    monkeypatch.setattr(circuit_breaker, "_fast_record", fast_rows.record if compiled else None)
    monkeypatch.setattr(event_bus, "_fast_record", fast_rows.record if compiled else None)
    monkeypatch.setattr(series, "_record_exponential", fast_rows.record_exponential if compiled else None)


@pytest.fixture(params=HOT_PATHS)
def hot_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Parametrized over the library instrumentations' hot paths, compiled and pure Python."""
    use_hot_path(request.param, monkeypatch)
    return str(request.param)


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
