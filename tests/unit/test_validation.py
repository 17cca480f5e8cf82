"""Bad input fails early and clearly; a failing handler never takes the bus down.

Every public constructor and function rejects bad arguments with TypeError (wrong type) or
ValueError (out of range) naming the argument and what is allowed. Bad or misspelt configuration
variables are a start-up ``ConfigurationError`` listing every problem at once, and the CLI prints
that list without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any

import pytest

from otel_trading import (
    CircuitBreaker,
    ConfigurationError,
    EventBus,
    configure_metrics,
    start_metrics_server,
)
from otel_trading.settings import otel_env_warnings
from otel_trading.tooling.cli import main

from ..conftest import Metrics


@dataclass
class Fill:
    qty: float


# --- CircuitBreaker -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [
        ({"name": ""}, ValueError, "name must be a non-empty string"),
        ({"name": "   "}, ValueError, "name must be a non-empty string"),
        ({"name": None}, TypeError, "name must be a str"),
        ({"failure_threshold": 0}, ValueError, "failure_threshold must be >= 1, got 0"),
        ({"failure_threshold": -3}, ValueError, "failure_threshold must be >= 1, got -3"),
        ({"failure_threshold": 2.5}, TypeError, "failure_threshold must be an int"),
        ({"failure_threshold": "5"}, TypeError, "failure_threshold must be an int"),
        ({"failure_threshold": True}, TypeError, "failure_threshold must be an int"),
        ({"recovery_timeout": -1}, ValueError, "recovery_timeout must be a finite number >= 0"),
        ({"recovery_timeout": math.nan}, ValueError, "recovery_timeout must be a finite number >= 0"),
        ({"recovery_timeout": math.inf}, ValueError, "recovery_timeout must be a finite number >= 0"),
        ({"recovery_timeout": "30"}, TypeError, "recovery_timeout must be a number of seconds"),
        ({"half_open_max_calls": 0}, ValueError, "half_open_max_calls must be >= 1"),
        ({"sample_rate": -0.1}, ValueError, "sample_rate must be in [0, 1]"),
        ({"sample_rate": 1.5}, ValueError, "sample_rate must be in [0, 1]"),
        ({"sample_rate": math.nan}, ValueError, "sample_rate must be in [0, 1]"),
        ({"sample_rate": "0.5"}, TypeError, "sample_rate must be a number in [0, 1]"),
        ({"metrics_enabled": "yes"}, TypeError, "metrics_enabled must be a bool"),
        ({"clock": 12.0}, TypeError, "clock must be a callable"),
        ({"excluded_exceptions": [42]}, TypeError, "excluded_exceptions entries must be exception types"),
        ({"listeners": [42]}, TypeError, "listener must be callable"),
    ],
)
def test_circuit_breaker_rejects_bad_arguments_naming_them(
    kwargs: dict[str, Any], exc: type[Exception], needle: str
) -> None:
    args = {"name": "venue", **kwargs}
    with pytest.raises(exc) as info:
        CircuitBreaker(**args)
    assert needle in str(info.value)


# --- EventBus -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [
        ({"name": ""}, ValueError, "name must be a non-empty string"),
        ({"name": 7}, TypeError, "name must be a str"),
        ({"max_queue_size": 0}, ValueError, "max_queue_size must be >= 1, got 0"),
        ({"max_queue_size": -10}, ValueError, "max_queue_size must be >= 1, got -10"),
        ({"max_queue_size": 10.0}, TypeError, "max_queue_size must be an int"),
        ({"sample_rate": 2}, ValueError, "sample_rate must be in [0, 1]"),
        ({"metrics_enabled": 1}, TypeError, "metrics_enabled must be a bool"),
    ],
)
def test_event_bus_rejects_bad_arguments_naming_them(kwargs: dict[str, Any], exc: type[Exception], needle: str) -> None:
    with pytest.raises(exc) as info:
        EventBus(**kwargs)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("event_type", "handler", "needle"),
    [
        (Fill(1.0), print, "event_type must be a class"),
        ("Fill", print, "event_type must be a class"),
        (Fill, "not callable", "handler must be callable"),
    ],
)
def test_subscribe_rejects_non_classes_and_non_callables(event_type: Any, handler: Any, needle: str) -> None:
    with pytest.raises(TypeError, match=needle):
        EventBus(metrics_enabled=False).subscribe(event_type, handler)


# --- the metrics endpoint -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "exc", "needle"),
    [
        (-1, ValueError, "port must be a port in 0..65535"),
        (65536, ValueError, "port must be a port in 0..65535"),
        ("http", TypeError, "port must be an int port number"),
        (80.5, TypeError, "port must be an int port number"),
        (True, TypeError, "port must be an int port number"),
    ],
)
def test_start_metrics_server_rejects_bad_ports_naming_the_range(port: Any, exc: type[Exception], needle: str) -> None:
    with pytest.raises(exc) as info:
        start_metrics_server(port=port, addr="127.0.0.1")
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [
        ({"addr": ""}, ValueError, "addr must be a non-empty host"),
        ({"addr": 127001}, TypeError, "addr must be a host string"),
        ({"set_global": "yes"}, TypeError, "set_global must be a bool"),
        ({"registry": object()}, TypeError, "registry must be a prometheus_client CollectorRegistry"),
    ],
)
def test_start_metrics_server_rejects_bad_options_naming_them(
    kwargs: dict[str, Any], exc: type[Exception], needle: str
) -> None:
    with pytest.raises(exc) as info:
        start_metrics_server(**{"port": 0, "addr": "127.0.0.1", **kwargs})
    assert needle in str(info.value)


def test_configure_metrics_names_a_bad_prometheus_port() -> None:
    with pytest.raises(ConfigurationError, match=r"port must be a port in 0\.\.65535"):
        configure_metrics(exporters="prometheus", prometheus_port=70000, set_global=False)


def test_an_invalid_port_variable_is_named_with_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", "99999")
    with pytest.raises(ConfigurationError, match=r"OTEL_EXPORTER_PROMETHEUS_PORT='99999'"):
        start_metrics_server()


# --- configuration variables ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("OTEL_TRADING_MAX_LABEL_VALUES", "0", "OTEL_TRADING_MAX_LABEL_VALUES must be an integer >= 1"),
        ("OTEL_TRADING_MAX_LABEL_VALUES", "lots", "OTEL_TRADING_MAX_LABEL_VALUES must be an integer >= 1"),
        ("OTEL_TRADING_HISTOGRAM_SAMPLE_RATE", "1.5", "OTEL_TRADING_HISTOGRAM_SAMPLE_RATE must be"),
        ("OTEL_TRADING_HISTOGRAM_SAMPLE_RATE", "often", "OTEL_TRADING_HISTOGRAM_SAMPLE_RATE must be"),
        ("OTEL_TRADING_DISABLED_METRICS", "event_bus,latencies", "unknown metric group or key ['latencies']"),
        ("OTEL_TRADING_MAX_LABEL_VALUE", "10", "did you mean OTEL_TRADING_MAX_LABEL_VALUES?"),
        ("OTEL_TRADING_DISABLE_METRICS", "event_bus", "did you mean OTEL_TRADING_DISABLED_METRICS?"),
    ],
)
def test_bad_or_misspelt_variables_are_a_start_up_error(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError) as info:
        configure_metrics(exporters="none", set_global=False)
    assert any(needle in problem for problem in info.value.problems), info.value.problems


def test_every_configuration_problem_is_listed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus,statsd")
    monkeypatch.setenv("OTEL_TRADING_MAX_LABEL_VALUES", "-1")
    monkeypatch.setenv("OTEL_TRADING_HISTOGRAM_SAMPLE_RATE", "2")
    monkeypatch.setenv("OTEL_TRADING_MAX_LABEL_VALUE", "5")
    with pytest.raises(ConfigurationError) as info:
        configure_metrics(set_global=False)
    text = str(info.value)
    for needle in ("statsd", "OTEL_TRADING_MAX_LABEL_VALUES must", "SAMPLE_RATE must", "did you mean"):
        assert needle in text
    assert len(info.value.problems) == 4


def test_unrelated_variables_with_the_prefix_are_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # collector/build.sh reads OTEL_TRADING_CACHE_DIR; it is not a typo of a runtime setting.
    monkeypatch.setenv("OTEL_TRADING_CACHE_DIR", "/tmp/cache")
    configure_metrics(exporters="none", set_global=False).shutdown()


@pytest.mark.parametrize(
    ("var", "needle"),
    [
        (
            "OTEL_METRIC_EXPORTER",
            "OTEL_METRIC_EXPORTER is not an OpenTelemetry variable and is ignored: did you mean OTEL_METRICS_EXPORTER?",
        ),
        ("OTEL_EXPORTER_PROMETHEUS_PROT", "did you mean OTEL_EXPORTER_PROMETHEUS_PORT?"),
        ("OTEL_EXPORTER_OTLP_ENDPOINTS", "did you mean OTEL_EXPORTER_OTLP_ENDPOINT?"),
        ("OTEL_SERVICE_NAEM", "did you mean OTEL_SERVICE_NAME?"),
    ],
)
def test_misspelt_standard_variables_are_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, var: str, needle: str
) -> None:
    # Old design: ignored silently, by otel-trading and by the SDK.
    monkeypatch.setattr("otel_trading.settings._warned", set())
    monkeypatch.setenv(var, "x")
    with caplog.at_level(logging.WARNING, logger="otel_trading"):
        configure_metrics(exporters="none", set_global=False).shutdown()
    assert [r.levelno for r in caplog.records if needle in r.getMessage()] == [logging.WARNING]


def test_unknown_standard_looking_variables_far_from_any_known_name_are_left_alone() -> None:
    assert otel_env_warnings({"OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "x", "OTEL_PYTHON_LOG_LEVEL": "debug"}) == []
    assert otel_env_warnings({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_TRADING_CACHE_DIR": "/x"}) == []


@pytest.mark.parametrize("endpoint", ["http://localhost:4318", "http://localhost:4318/"])
def test_an_otlp_http_metrics_endpoint_without_a_path_gets_a_hint(endpoint: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": endpoint}
    [warning] = otel_env_warnings(env)
    assert "has no path" in warning and "use http://localhost:4318/v1/metrics" in warning
    assert otel_env_warnings({**env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/metrics"}) == []
    assert otel_env_warnings({**env, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == []


def test_start_metrics_server_refuses_bad_variables_before_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRADING_DISABLED_METRICS", "everything")
    with pytest.raises(ConfigurationError, match="OTEL_TRADING_DISABLED_METRICS: unknown metric group"):
        start_metrics_server(port=0, addr="127.0.0.1")


def test_a_component_created_with_a_bad_variable_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRADING_MAX_LABEL_VALUES", "many")
    with pytest.raises(ValueError, match="OTEL_TRADING_MAX_LABEL_VALUES"):
        EventBus()


def test_cli_prints_the_problem_list_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRADING_MAX_LABEL_VALUES", "0")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "carrier-pigeon")
    assert main(["demo", "--port", "0", "--addr", "127.0.0.1", "--duration", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "invalid otel-trading metrics configuration" in err
    assert "carrier-pigeon" in err and "OTEL_TRADING_MAX_LABEL_VALUES" in err
    assert "Traceback" not in err


# --- a raising handler never stops the bus ----------------------------------------------------------


async def test_raising_handlers_are_counted_and_siblings_still_run(metrics: Metrics) -> None:
    seen: list[float] = []

    def sync_bug(_: Fill) -> None:
        raise KeyError("sync handler bug")

    async def async_bug(_: Fill) -> None:
        raise RuntimeError("async handler bug")

    async with EventBus(meter_provider=metrics.provider) as bus:
        bus.subscribe(Fill, sync_bug)
        bus.subscribe(Fill, lambda e: seen.append(e.qty))
        bus.subscribe(Fill, async_bug)
        for qty in (1.0, 2.0, 3.0):
            await bus.publish(Fill(qty))
    assert seen == [1.0, 2.0, 3.0]
    assert metrics.value("event_bus.handler.errors", event_type="Fill") == 6
    assert metrics.value("event_bus.events.processed", event_type="Fill") == 3


async def test_the_bus_keeps_delivering_after_a_handler_raises() -> None:
    seen: list[float] = []

    def fails_first(e: Fill) -> None:
        if e.qty == 1.0:
            raise ValueError("first one")
        seen.append(e.qty)

    async with EventBus(metrics_enabled=False) as bus:
        bus.subscribe(Fill, fails_first)
        await bus.publish(Fill(1.0))
        await bus.publish(Fill(2.0))
        await asyncio.sleep(0)
        assert bus.running
    assert seen == [2.0]


async def test_a_handler_raising_cancelled_error_does_not_stop_the_bus() -> None:
    seen: list[float] = []

    async def cancelled(_: Fill) -> None:
        raise asyncio.CancelledError()

    bus = EventBus(metrics_enabled=False)
    bus.subscribe(Fill, cancelled)
    bus.subscribe(Fill, lambda e: seen.append(e.qty))
    await bus.start()
    await bus.publish(Fill(1.0))
    await asyncio.sleep(0.05)
    assert seen == [1.0] and bus.running
    await asyncio.wait_for(bus.stop(), 2)


async def test_cancelling_the_bus_worker_from_outside_still_ends_it() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(_: Fill) -> None:
        started.set()
        await release.wait()

    bus = EventBus(metrics_enabled=False)
    bus.subscribe(Fill, slow)
    await bus.start()
    await bus.publish(Fill(1.0))
    await asyncio.wait_for(started.wait(), 2)
    worker = next(t for t in asyncio.all_tasks() if t.get_name() == "otel-trading-event-bus-default")
    worker.cancel()  # as a loop shutting down cancels every task
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(worker, 2)
    assert not bus.running
    await asyncio.wait_for(bus.stop(), 2)
