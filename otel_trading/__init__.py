"""otel-trading: OpenTelemetry-native circuit breakers and event bus for asyncio trading bots.

Components record through OTel instruments and come out in Prometheus under the monitoring
guide's exact names, via the embedded exporter (``start_metrics_server``) or an OTLP collector
(``configure_metrics`` with ``OTEL_METRICS_EXPORTER=otlp``).
"""

from otel_trading.circuit_breaker import CircuitBreaker, CircuitOpenError, CircuitState
from otel_trading.errors import EventBusStoppedError
from otel_trading.event_bus import EventBus, Subscription
from otel_trading.exporting import (
    ConfigurationError,
    MetricsHandle,
    MetricsServer,
    configure_metrics,
    start_metrics_server,
)
from otel_trading.loop_monitor import LoopMonitor, monitor_event_loop
from otel_trading.recording import views
from otel_trading.version import __version__

__all__ = [
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "ConfigurationError",
    "EventBus",
    "EventBusStoppedError",
    "LoopMonitor",
    "MetricsHandle",
    "MetricsServer",
    "Subscription",
    "__version__",
    "configure_metrics",
    "monitor_event_loop",
    "start_metrics_server",
    "views",
]
