"""Environment variable names otel-trading reads, as constants (the OTel SDK's own ones are reused).

Only knobs OpenTelemetry has no variable for get an ``OTEL_TRADING_`` name.
"""

from __future__ import annotations

# Standard OTel variables we honour; re-exported so all names live in one place.
from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_PROMETHEUS_HOST,
    OTEL_EXPORTER_PROMETHEUS_PORT,
    OTEL_METRIC_EXPORT_INTERVAL,
    OTEL_METRIC_EXPORT_TIMEOUT,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SERVICE_NAME,
)

#: Comma list of metric groups (``circuit_breaker``, ``event_bus``) or metric keys
#: (e.g. ``bus_processing_duration``) to switch off process-wide.
OTEL_TRADING_DISABLED_METRICS = "OTEL_TRADING_DISABLED_METRICS"

#: Default ``sample_rate`` (0..1) for the duration histograms; counters always stay exact.
OTEL_TRADING_HISTOGRAM_SAMPLE_RATE = "OTEL_TRADING_HISTOGRAM_SAMPLE_RATE"

#: Maximum distinct values per data-derived label (event type, breaker name) before folding.
OTEL_TRADING_MAX_LABEL_VALUES = "OTEL_TRADING_MAX_LABEL_VALUES"

#: Auto-instrumentation of the bot's own breaker / event-bus classes: inline JSON, or the path of a
#: TOML or JSON file (see ``otel_trading.instrumentation.config``). When unset, a
#: ``[tool.otel-trading.instrument]`` section of ``pyproject.toml`` in the working directory is used.
OTEL_TRADING_INSTRUMENT = "OTEL_TRADING_INSTRUMENT"

__all__ = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_PROMETHEUS_HOST",
    "OTEL_EXPORTER_PROMETHEUS_PORT",
    "OTEL_METRICS_EXPORTER",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_METRIC_EXPORT_TIMEOUT",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SERVICE_NAME",
    "OTEL_TRADING_DISABLED_METRICS",
    "OTEL_TRADING_HISTOGRAM_SAMPLE_RATE",
    "OTEL_TRADING_INSTRUMENT",
    "OTEL_TRADING_MAX_LABEL_VALUES",
]
