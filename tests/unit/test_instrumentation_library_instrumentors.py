"""One instrumentor per library, the contrib way: entry points, version ranges, disable names, delegation.

The auto-instrumentation loader is run in-process (``_load_instrumentors``, what
``opentelemetry-instrument`` runs from ``sitecustomize``) to check what it does with these entry
points: each library loaded once, an out-of-range library skipped with one log line, a disabled
one not loaded, and nothing raised into the loader (an exception there would stop it loading every
instrumentor after ours).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

import pyee
import pytest
from opentelemetry.instrumentation.auto_instrumentation import _load
from opentelemetry.instrumentation.distro import DefaultDistro

from otel_trading.instrumentation import (
    LIBRARY_INSTRUMENTORS,
    LIBRARY_TARGETS,
    TARGETS,
    CircuitbreakerInstrumentor,
    LibraryInstrumentor,
    PurgatoryInstrumentor,
    PybreakerInstrumentor,
    PyeeInstrumentor,
    TradingInstrumentor,
    disabled_target_warnings,
    disabled_targets,
)
from otel_trading.instrumentation._core import instrumentor as _instrumentors
from otel_trading.instrumentation._core.releases import LIBRARIES
from otel_trading.metric_contract import METRICS_BY_KEY

from ..conftest import Metrics

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}


@pytest.fixture(autouse=True)
def _every_instrumentor_undone() -> Iterator[None]:
    yield
    for cls in (TradingInstrumentor, *LIBRARY_INSTRUMENTORS):
        inst = cls()
        if inst.is_instrumented_by_opentelemetry:
            inst.uninstrument()


def _patched_pyee() -> bool:
    return vars(pyee.EventEmitter)["_call_handlers"] is not _PYEE_CALL_HANDLERS


_PYEE_CALL_HANDLERS = vars(pyee.EventEmitter)["_call_handlers"]


def test_every_library_has_its_own_entry_point_and_range() -> None:
    group = entry_points(group="opentelemetry_instrumentor")
    found = {ep.name: ep for ep in group if ep.name.startswith("otel_trading")}
    assert sorted(found) == sorted(["otel_trading", *(f"otel_trading_{t}" for t in LIBRARY_TARGETS)])
    for cls in LIBRARY_INSTRUMENTORS:
        assert found[cls.entry_point_name()].load() is cls
        assert cls().instrumentation_dependencies() == (LIBRARIES[cls.target].requirement(),)
    assert (*LIBRARY_TARGETS, "components", "custom") == TARGETS


def test_the_loader_instruments_each_library_once_without_a_warning(
    global_metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        _load._load_instrumentors(DefaultDistro())
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert TradingInstrumentor().is_instrumented_by_opentelemetry
    assert all(cls().is_instrumented_by_opentelemetry for cls in LIBRARY_INSTRUMENTORS)
    ee = pyee.EventEmitter()
    ee.on("tick", lambda: None)
    ee.emit("tick")
    assert global_metrics.value(N["bus_published"], event_type="tick") == 1  # not twice


def test_the_loader_skips_a_library_out_of_range_with_one_error_line(
    global_metrics: Metrics, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PyeeInstrumentor, "_instruments", ("pyee >= 99",))
    monkeypatch.setattr(_instrumentors, "_REPORTED_CONFLICTS", {})
    with caplog.at_level(logging.DEBUG):
        _load._load_instrumentors(DefaultDistro())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"otel-trading: otel_trading_pyee instruments pyee >= 99, but pyee {pyee_version()} is installed; "
        "pyee is left uninstrumented"
    ]
    assert not PyeeInstrumentor().is_instrumented_by_opentelemetry and not _patched_pyee()
    assert CircuitbreakerInstrumentor().is_instrumented_by_opentelemetry  # the others are unaffected


def pyee_version() -> str:
    from importlib.metadata import version

    return version("pyee")


def test_a_library_that_is_not_installed_is_skipped_quietly(
    metrics: Metrics, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PurgatoryInstrumentor, "_instruments", ("purgatory-not-installed >= 1",))
    with caplog.at_level(logging.DEBUG, logger="otel_trading"):
        TradingInstrumentor().instrument(meter_provider=metrics.provider, config={})
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("purgatory is not installed" in r.getMessage() for r in caplog.records)
    assert not PurgatoryInstrumentor().is_instrumented_by_opentelemetry


@pytest.mark.parametrize("name", ["otel_trading_pyee", "otel_trading.pyee", "otel_trading", "*"])
def test_a_library_is_switched_off_by_its_entry_point_or_target_name(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", f"requests,{name}")
    with caplog.at_level(logging.WARNING, logger="otel_trading"):
        TradingInstrumentor().instrument(meter_provider=metrics.provider, config={})
        PyeeInstrumentor().instrument(meter_provider=metrics.provider)
    assert not _patched_pyee()
    assert "pyee" in disabled_targets()
    assert caplog.records == []  # every one of these names is known


def test_umbrella_delegates_and_undoes_only_what_it_delegated(metrics: Metrics) -> None:
    own = PybreakerInstrumentor()
    own.instrument(meter_provider=metrics.provider)  # the app instrumented pybreaker itself
    umbrella = TradingInstrumentor()
    umbrella.instrument(meter_provider=metrics.provider, config={})
    assert PyeeInstrumentor().is_instrumented_by_opentelemetry and _patched_pyee()
    umbrella.uninstrument()
    assert not PyeeInstrumentor().is_instrumented_by_opentelemetry and not _patched_pyee()
    assert own.is_instrumented_by_opentelemetry  # not the umbrella's to undo


def test_instrumenting_twice_is_quiet_and_patches_once(metrics: Metrics, caplog: pytest.LogCaptureFixture) -> None:
    TradingInstrumentor().instrument(meter_provider=metrics.provider, config={})
    patched = list(PyeeInstrumentor().patched)
    with caplog.at_level(logging.WARNING):
        PyeeInstrumentor().instrument(skip_dep_check=True)  # as the loader does after the umbrella
    assert caplog.records == [] and PyeeInstrumentor().patched == patched


def test_an_error_while_instrumenting_is_logged_and_never_raised(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: LibraryInstrumentor, session: Any) -> list[Any]:
        raise RuntimeError("bug in otel-trading")

    monkeypatch.setattr(CircuitbreakerInstrumentor, "_targets", broken)
    with caplog.at_level(logging.ERROR, logger="otel_trading"):
        TradingInstrumentor().instrument(meter_provider=metrics.provider, config={})
    assert [r.getMessage() for r in caplog.records if "circuitbreaker" in r.getMessage()]
    assert not CircuitbreakerInstrumentor().is_instrumented_by_opentelemetry
    assert PyeeInstrumentor().is_instrumented_by_opentelemetry


def test_entry_point_names_are_known_disable_names() -> None:
    env = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "otel_trading_circuitbreaker,otel_trading_pyee,otel_trading_pyeee"}
    warnings = disabled_target_warnings(env)
    assert len(warnings) == 1 and "'otel_trading_pyeee'" in warnings[0]
    assert "did you mean otel_trading_pyee" in warnings[0]
    assert disabled_targets(env) == frozenset({"circuitbreaker", "pyee"})
