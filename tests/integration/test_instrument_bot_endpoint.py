"""instrument_bot() with the metrics endpoint it starts: served over HTTP, and its port freed again."""

from __future__ import annotations

import socket

import pybreaker
import pytest

from otel_trading.exporting import ConfigurationError
from otel_trading.instrumentation import instrument_bot

from ..realprocs import free_port, samples, scrape


def test_instrument_bot_serves_pybreaker_metrics_over_http(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
    with instrument_bot(config={}) as bot:
        assert bot.metrics is not None
        breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=600, name="kraken")
        with pytest.raises(pybreaker.CircuitBreakerError):
            breaker.call(lambda: 1 / 0)
        scraped = samples(scrape(f"http://127.0.0.1:{port}/metrics"))
    found = {(name, dict(labels).get("name")): v for (name, labels), v in scraped.items()}
    assert found[("circuit_breaker_state", "kraken")] == 1
    assert found[("circuit_breaker_failures_total", "kraken")] == 1


def test_instrument_bot_close_uninstruments_and_frees_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
    init = vars(pybreaker.CircuitBreaker)["__init__"]
    bot = instrument_bot(config={})
    bot.close()
    assert vars(pybreaker.CircuitBreaker)["__init__"] is init
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_instrument_bot_with_invalid_config_raises_and_stops_the_endpoint_it_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
    with pytest.raises(ConfigurationError, match=r"event_buses\[0\]"):
        instrument_bot(config={"event_buses": [{"class": "bus:Bus"}]})
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
