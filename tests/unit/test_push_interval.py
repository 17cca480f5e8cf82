"""configure_metrics() pushes every 15 s (the scrape interval) unless OTEL_METRIC_EXPORT_INTERVAL says otherwise."""

from __future__ import annotations

import pytest

from otel_trading.exporting import configure_metrics
from otel_trading.exporting.configure import DEFAULT_PUSH_INTERVAL_MILLIS


def _interval(handle: object) -> float:
    (reader,) = handle.readers  # type: ignore[attr-defined]
    return float(reader._export_interval_millis)


def test_push_exporters_default_to_the_guides_15_second_interval() -> None:
    handle = configure_metrics(exporters="console", set_global=False)
    try:
        assert DEFAULT_PUSH_INTERVAL_MILLIS == 15_000
        assert _interval(handle) == 15_000
    finally:
        handle.shutdown()


def test_the_standard_variable_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "5000")
    handle = configure_metrics(exporters="console", set_global=False)
    try:
        assert _interval(handle) == 5_000
    finally:
        handle.shutdown()
