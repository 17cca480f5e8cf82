"""The doctor's hot_paths check: which hot paths the library instrumentations installed here run on, and why."""

from __future__ import annotations

import sys
from typing import Any

import pybreaker
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_trading.instrumentation._core import hot_path
from otel_trading.tooling.doctor.checks import CHECKS, check_hot_paths
from otel_trading.tooling.doctor.context import Context, DoctorOptions
from otel_trading.tooling.doctor.results import Status

from ..conftest import make_metrics, use_hot_path


def _context() -> Context:
    return Context(DoctorOptions(metrics_url="http://127.0.0.1:8000/metrics"))


def test_the_check_is_part_of_the_pipeline() -> None:
    assert check_hot_paths in CHECKS


def test_compiled_hot_paths_are_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hot_path, "pure_python_reason", lambda: None)  # every module built and loaded
    result = check_hot_paths(_context())
    assert result.status is Status.OK and "run compiled here" in result.detail
    assert "no compiled hook is installed in this process" in result.detail
    assert result.data == {"compiled": True, "fast_path_counts": {}}


def test_the_fast_path_counts_of_the_hooks_installed_here_are_reported(
    monkeypatch: pytest.MonkeyPatch, instrumentor: Any
) -> None:
    use_hot_path("compiled", monkeypatch)
    metrics = make_metrics(True)
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    breaker = pybreaker.CircuitBreaker(name="doctor")
    for _ in range(3):
        breaker.call(int)
    result = check_hot_paths(_context())
    assert result.status is Status.OK
    assert result.data["fast_path_counts"]["pybreaker"]["CircuitBreaker.call"] == (3, 0)
    assert "pybreaker CircuitBreaker.call 3 hit(s), 0 miss(es)" in result.detail
    metrics.provider.shutdown()


def test_calls_made_in_a_span_are_reported_as_misses(monkeypatch: pytest.MonkeyPatch, instrumentor: Any) -> None:
    use_hot_path("compiled", monkeypatch)
    metrics = make_metrics(True)
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    breaker = pybreaker.CircuitBreaker(name="doctor-traced")
    span = NonRecordingSpan(SpanContext(0x1, 0x2, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)))
    with trace.use_span(span):  # handed to the twin, which records the exemplar
        for _ in range(3):
            breaker.call(int)
    breaker.call(int)
    result = check_hot_paths(_context())
    assert result.data["fast_path_counts"]["pybreaker"]["CircuitBreaker.call"] == (1, 3)
    assert "pybreaker CircuitBreaker.call 1 hit(s), 3 miss(es)" in result.detail
    metrics.provider.shutdown()


def test_pure_python_hot_paths_warn_with_the_reason_and_a_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hot_path, "enabled", False)
    monkeypatch.setattr(hot_path, "_why", hot_path.NOT_BUILT)
    result = check_hot_paths(_context())
    assert result.status is Status.WARN
    assert hot_path.NOT_BUILT in result.detail and sys.executable in result.detail
    assert "wheel" in result.fix and "python3-dev" in result.fix
    assert result.data == {"compiled": False, "reason": hot_path.NOT_BUILT, "fast_path_counts": {}}


def test_without_the_instrumentation_extra_the_check_is_skipped_and_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    package = "otel_trading.instrumentation"
    for name in [n for n in sys.modules if n == package or n.startswith(f"{package}.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "wrapt", None)
    result = check_hot_paths(_context())
    assert result.status is Status.SKIP
    assert "otel-trading[instrumentation]" in result.fix and "wrapt" in result.detail
