"""Getting metrics out: the embedded Prometheus endpoint and env-driven MeterProvider set-up.

``start_metrics_server()`` is the guide's one-liner (``metrics_server``). ``configure_metrics()``
builds the provider from the standard OTel variables (``OTEL_METRICS_EXPORTER`` = prometheus |
otlp | console | none, ``OTEL_EXPORTER_OTLP_*``, ``OTEL_SERVICE_NAME``, ...), so backends are
swapped by configuration (``configure``). ``http_server`` serves /metrics with TLS and basic auth.
"""

from otel_trading.errors import ConfigurationError
from otel_trading.exporting.configure import MetricsHandle, configure_metrics
from otel_trading.exporting.metrics_server import (
    DEFAULT_METRICS_ADDR,
    DEFAULT_METRICS_PORT,
    MetricsServer,
    prometheus_reader,
    start_metrics_server,
)

__all__ = [
    "DEFAULT_METRICS_ADDR",
    "DEFAULT_METRICS_PORT",
    "ConfigurationError",
    "MetricsHandle",
    "MetricsServer",
    "configure_metrics",
    "prometheus_reader",
    "start_metrics_server",
]
