"""Installing a provider as the global one: once, and never over one the application set."""

from __future__ import annotations

from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import MeterProvider

from otel_trading.recording import global_provider_is_set

__all__ = ["install_global"]


def install_global(provider: MeterProvider) -> None:
    if global_provider_is_set():
        raise RuntimeError(
            "a global MeterProvider is already set (by opentelemetry-instrument, configure_metrics() or "
            "the application); call with set_global=False and pass handle.meter_provider to components"
        )
    otel_metrics.set_meter_provider(provider)
