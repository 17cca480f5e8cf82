"""Support for tests run on both of the own components' hot paths: the compiled update, or the inline Python."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from otel_trading import circuit_breaker as circuit_breaker_module
from otel_trading import event_bus as event_bus_module
from otel_trading.recording import fast_rows
from otel_trading.recording import series as series_module

Record = Callable[[list[Any], float], bool | None]
RecordExponential = Callable[[list[Any], float], int | None]

#: The two hot paths of the components: ``recording._fast_rows`` where built, and the inline Python.
HOT_PATHS = ["compiled", "python"]


def _require_compiled() -> None:
    if fast_rows.record is None or fast_rows.record_exponential is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the components' compiled update is not in use ({fast_rows.why_not}); CI builds it")
        pytest.skip(f"the components' compiled update is not in use here: {fast_rows.why_not}")


def compiled_record() -> Record:
    """The compiled ``record`` (skips locally / fails in CI when it is not built or not allowed here)."""
    _require_compiled()
    assert fast_rows.record is not None
    return fast_rows.record


def compiled_record_exponential() -> RecordExponential:
    """The compiled ``record_exponential`` (as ``compiled_record``)."""
    _require_compiled()
    assert fast_rows.record_exponential is not None
    return fast_rows.record_exponential


def use_hot_path(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the components on ``path`` (one of ``HOT_PATHS``): the compiled update, or their inline Python
    (as where it is not built), for explicit and exponential rows alike."""
    compiled = path == "compiled"
    if compiled:
        _require_compiled()
    monkeypatch.setattr(circuit_breaker_module, "_fast_record", fast_rows.record if compiled else None)
    monkeypatch.setattr(event_bus_module, "_fast_record", fast_rows.record if compiled else None)
    monkeypatch.setattr(series_module, "_record_exponential", fast_rows.record_exponential if compiled else None)
