"""otel-trading's own CircuitBreaker and EventBus under ``TradingInstrumentor``.

The instrumentor only fills constructor defaults: ``metrics_enabled`` when the bot passed none,
and the instrumentor's ``meter_provider`` when the bot passed none. The bot's explicit choices win.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from otel_trading import CircuitBreaker, EventBus
from otel_trading.instrumentation import TradingInstrumentor
from otel_trading.metric_contract import METRICS_BY_KEY

from ..conftest import Metrics, make_metrics

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}


@dataclass
class Tick:
    price: float


def test_breaker_built_without_meter_provider_records_into_the_instrumentors(instrumented: Metrics) -> None:
    breaker = CircuitBreaker("binance")
    breaker.call(lambda: None)
    assert instrumented.value(N["breaker_successes"], name="binance") == 1


async def test_bus_built_without_meter_provider_records_into_the_instrumentors(instrumented: Metrics) -> None:
    async with EventBus(name="market") as bus:
        bus.subscribe(Tick, lambda e: None)
        await bus.publish(Tick(1.0))
    assert instrumented.value(N["bus_published"], event_type="Tick") == 1
    assert instrumented.value(N["bus_processed"], event_type="Tick") == 1


def test_explicit_metrics_enabled_false_is_respected(instrumented: Metrics) -> None:
    breaker = CircuitBreaker("quiet", metrics_enabled=False)
    breaker.call(lambda: None)
    assert instrumented.value(N["breaker_successes"], name="quiet") is None


def test_explicit_meter_provider_is_respected(instrumented: Metrics) -> None:
    own = make_metrics(with_views=True)
    try:
        CircuitBreaker("own", meter_provider=own.provider).call(lambda: None)
        assert own.value(N["breaker_successes"], name="own") == 1
        assert instrumented.value(N["breaker_successes"], name="own") is None
    finally:
        own.provider.shutdown()


def test_uninstrument_restores_the_constructors_exactly(metrics: Metrics, instrumentor: TradingInstrumentor) -> None:
    inits = (vars(CircuitBreaker)["__init__"], vars(EventBus)["__init__"])
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert vars(CircuitBreaker)["__init__"] is not inits[0]
    instrumentor.uninstrument()
    assert (vars(CircuitBreaker)["__init__"], vars(EventBus)["__init__"]) == inits
    assert vars(CircuitBreaker)["__init__"] is inits[0] and vars(EventBus)["__init__"] is inits[1]


def test_after_uninstrument_new_components_use_the_global_provider_again(
    global_metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    own = make_metrics(with_views=True)
    try:
        instrumentor.instrument(meter_provider=own.provider, config={})
        instrumentor.uninstrument()
        CircuitBreaker("after").call(lambda: None)
        assert global_metrics.value(N["breaker_successes"], name="after") == 1
        assert own.value(N["breaker_successes"], name="after") is None
    finally:
        own.provider.shutdown()


def test_components_are_left_alone_when_their_target_is_disabled(
    metrics: Metrics, instrumentor: TradingInstrumentor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "otel_trading.components")
    init = vars(CircuitBreaker)["__init__"]
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert vars(CircuitBreaker)["__init__"] is init
    CircuitBreaker("global-only").call(lambda: None)
    assert metrics.value(N["breaker_successes"], name="global-only") is None
