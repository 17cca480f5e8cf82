"""Support for side-by-side tests: a breaker clock that gives chosen durations, and a reader's latency points."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_trading.metric_contract import BREAKER_LATENCY


class DurationClock:
    """``perf_counter`` for a breaker: each call (a start read, then an end read) lasts the next of ``values``."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self._started = False

    def __call__(self) -> float:
        self._started = not self._started
        return 0.0 if self._started else self.values.pop(0)


def latency_points(reader: InMemoryMetricReader) -> list[Any]:
    """The breaker-latency data points of one collection of ``reader``."""
    data = reader.get_metrics_data()
    return [
        p
        for rm in (data.resource_metrics if data else ())
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == BREAKER_LATENCY.otel_name
        for p in m.data.data_points
    ]
