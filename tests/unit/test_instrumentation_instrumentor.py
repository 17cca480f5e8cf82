"""The instrumentor as OpenTelemetry sees it (entry point, disabling), and ``instrument_bot()``."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

import aiobreaker
import pybreaker
import pytest

from otel_trading.instrumentation import TradingInstrumentor, instrument_bot
from otel_trading.metric_contract import METRICS_BY_KEY

from ..conftest import Metrics

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}


def test_entry_point_is_registered_for_opentelemetry_instrument() -> None:
    (ep,) = [ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "otel_trading"]
    assert ep.load() is TradingInstrumentor


def test_disabling_otel_trading_by_name_patches_nothing(
    metrics: Metrics, instrumentor: TradingInstrumentor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "requests, otel_trading")
    instrumentor.instrument(meter_provider=metrics.provider)
    assert instrumentor.patched == []
    pybreaker.CircuitBreaker(name="binance").call(lambda: None)
    assert metrics.value(N["breaker_successes"], name="binance") is None


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("otel_trading.pybreakr", "did you mean otel_trading.pybreaker?"),
        ("requests,otel-trading", "did you mean otel_trading?"),
        ("otel_trading.redis", "known: otel_trading, otel_trading.pybreaker"),
    ],
)
def test_a_disabled_target_that_names_nothing_is_reported(
    metrics: Metrics,
    instrumentor: TradingInstrumentor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    value: str,
    needle: str,
) -> None:
    # Old design: ignored silently (and pybreaker stayed instrumented).
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", value)
    with caplog.at_level(logging.WARNING, logger="otel_trading"):
        instrumentor.instrument(meter_provider=metrics.provider, config={})
    [record] = caplog.records
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS" in record.getMessage() and needle in record.getMessage()
    assert "requests" not in record.getMessage()


def test_misspelt_standard_variables_are_warned_about_under_the_instrumentor(
    metrics: Metrics,
    instrumentor: TradingInstrumentor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORTER", "prometheus")
    monkeypatch.setattr("otel_trading.settings._warned", set())  # each warning is logged once per process
    with caplog.at_level(logging.WARNING, logger="otel_trading"):
        instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert any("did you mean OTEL_METRICS_EXPORTER?" in r.getMessage() for r in caplog.records)


def test_one_target_can_be_disabled_on_its_own(
    metrics: Metrics, instrumentor: TradingInstrumentor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "otel_trading.pybreaker")
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    owners = {owner for owner, _ in instrumentor.patched}
    assert pybreaker.CircuitBreaker not in owners
    assert aiobreaker.CircuitBreaker in owners


def test_reinstrumenting_keeps_counters_monotonic(metrics: Metrics, instrumentor: TradingInstrumentor) -> None:
    breaker = pybreaker.CircuitBreaker(name="binance")
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    breaker.call(lambda: None)
    instrumentor.uninstrument()
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    breaker.call(lambda: None)
    assert metrics.value(N["breaker_successes"], name="binance") == 2


def test_instrument_bot_uses_an_existing_global_provider_and_starts_nothing(global_metrics: Metrics) -> None:
    with instrument_bot(config={}) as bot:
        assert bot.metrics is None
        pybreaker.CircuitBreaker(name="binance").call(lambda: None)
        assert global_metrics.value(N["breaker_successes"], name="binance") == 1


def test_instrument_bot_honours_disabled_instrumentations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "otel_trading")
    init = vars(pybreaker.CircuitBreaker)["__init__"]
    bot = instrument_bot()
    assert bot.instrumentor is None and bot.metrics is None
    assert vars(pybreaker.CircuitBreaker)["__init__"] is init


def test_instrument_bot_under_an_active_instrumentation_changes_and_undoes_nothing(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    instrumentor.instrument(meter_provider=metrics.provider, config={})  # as opentelemetry-instrument does
    bot = instrument_bot(config={})
    assert bot.instrumentor is None and bot.metrics is None
    bot.close()
    assert instrumentor.is_instrumented_by_opentelemetry
    pybreaker.CircuitBreaker(name="binance").call(lambda: None)
    assert metrics.value(N["breaker_successes"], name="binance") == 1
