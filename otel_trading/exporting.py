"""Getting metrics out: the embedded Prometheus endpoint and env-driven MeterProvider set-up.

``start_metrics_server()`` is the guide's one-liner. ``configure_metrics()`` builds the provider
from the standard OTel variables (``OTEL_METRICS_EXPORTER`` = prometheus | otlp | console | none,
``OTEL_EXPORTER_OTLP_*``, ``OTEL_SERVICE_NAME``, ...), so backends are swapped by configuration.
Both add otel-trading's views, which put histograms on the fast path (see ``sdk_bridge``).
"""

from __future__ import annotations

import errno
import logging
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry

from otel_trading.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_PROMETHEUS_HOST,
    OTEL_EXPORTER_PROMETHEUS_PORT,
    OTEL_METRIC_EXPORT_INTERVAL,
    OTEL_METRICS_EXPORTER,
)
from otel_trading.sdk_bridge import views as trading_views
from otel_trading.validation import check_port

__all__ = [
    "DEFAULT_METRICS_ADDR",
    "DEFAULT_METRICS_PORT",
    "ConfigurationError",
    "MetricsHandle",
    "MetricsServer",
    "configure_metrics",
    "start_metrics_server",
]

_logger = logging.getLogger(__name__)

#: Loopback by default: /metrics is not exposed to the network unless asked. In a container
#: (compose, Kubernetes) pass ``addr="0.0.0.0"`` or set OTEL_EXPORTER_PROMETHEUS_HOST=0.0.0.0.
DEFAULT_METRICS_ADDR = "127.0.0.1"
#: The guide's port.
DEFAULT_METRICS_PORT = 8000

_EXPORTERS = ("prometheus", "otlp", "console", "none")
_PROTOCOLS = ("grpc", "http/protobuf")


class ConfigurationError(ValueError):
    """Start-up configuration is invalid; the message lists every problem found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid otel-trading metrics configuration:\n  - " + "\n  - ".join(self.problems))


@dataclass
class MetricsServer:
    """A running /metrics endpoint. ``close()`` stops the HTTP server and the provider behind it."""

    addr: str
    port: int
    registry: CollectorRegistry
    meter_provider: MeterProvider
    _server: Any = field(repr=False)
    _thread: Any = field(repr=False)
    _owns_provider: bool = field(default=True, repr=False)
    closed: bool = False

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if self._owns_provider:
            self.meter_provider.shutdown()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resolve_endpoint(port: int | None, addr: str | None) -> tuple[int, str]:
    if port is None:
        raw = os.environ.get(OTEL_EXPORTER_PROMETHEUS_PORT)
        try:
            port = check_port(OTEL_EXPORTER_PROMETHEUS_PORT, raw) if raw else DEFAULT_METRICS_PORT
        except (TypeError, ValueError) as exc:
            raise ConfigurationError([f"{OTEL_EXPORTER_PROMETHEUS_PORT}={raw!r}: {exc}"]) from None
    else:
        port = check_port("port", port)
    if addr is None:
        addr = os.environ.get(OTEL_EXPORTER_PROMETHEUS_HOST) or DEFAULT_METRICS_ADDR
    elif not isinstance(addr, str) or not addr:
        raise TypeError(f"addr must be a non-empty host string, got {addr!r}")
    return port, addr


def _serve(registry: CollectorRegistry, port: int, addr: str, **tls: Any) -> tuple[Any, Any, int]:
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=addr, registry=registry, **tls)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise OSError(exc.errno, f"metrics server: port {port} on {addr} is already in use") from exc
        raise OSError(exc.errno, f"metrics server: cannot listen on {addr}:{port}: {exc.strerror or exc}") from exc
    return server, thread, int(server.server_port)


def _prometheus_endpoint(
    port: int, addr: str, registry: CollectorRegistry | None, tls: dict[str, str]
) -> tuple[MetricReader, CollectorRegistry, Any, Any, int]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(registry=registry)
    try:
        server, thread, bound = _serve(registry, port, addr, **tls)
    except BaseException:
        reader.shutdown()
        raise
    return reader, registry, server, thread, bound


def start_metrics_server(
    port: int | None = None,
    addr: str | None = None,
    *,
    registry: CollectorRegistry | None = None,
    resource: Resource | None = None,
    views: Sequence[View] = (),
    set_global: bool = True,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> MetricsServer:
    """Serve OTel metrics in Prometheus format at ``http://addr:port/metrics``.

    ``port``/``addr`` default to OTEL_EXPORTER_PROMETHEUS_PORT/HOST, else 8000 on 127.0.0.1
    (``port=0`` picks a free port; read it back from ``.port``). The provider behind it becomes
    the global one (``set_global``) so components created without ``meter_provider=`` report here.
    ``certfile``/``keyfile`` serve HTTPS.
    """
    port, addr = _resolve_endpoint(port, addr)
    tls = {k: v for k, v in (("certfile", certfile), ("keyfile", keyfile)) if v}
    reader, registry, server, thread, bound = _prometheus_endpoint(port, addr, registry, tls)
    provider = MeterProvider(
        metric_readers=[reader], resource=resource or Resource.create(), views=[*trading_views(), *views]
    )
    handle = MetricsServer(addr, bound, registry, provider, server, thread)
    if set_global:
        try:
            _set_global(provider)
        except RuntimeError:
            handle.close()
            raise
    return handle


def _set_global(provider: MeterProvider) -> None:
    current = otel_metrics.get_meter_provider()
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    if not isinstance(current, _ProxyMeterProvider):
        raise RuntimeError(
            "a global MeterProvider is already set (by opentelemetry-instrument, configure_metrics() or "
            "the application); call with set_global=False and pass handle.meter_provider to components"
        )
    otel_metrics.set_meter_provider(provider)


@dataclass
class MetricsHandle:
    """What ``configure_metrics()`` built. ``shutdown()`` flushes and stops every exporter."""

    meter_provider: MeterProvider
    exporters: tuple[str, ...]
    readers: tuple[MetricReader, ...]
    server: MetricsServer | None = None

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self.meter_provider.force_flush(timeout_millis))

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.close()
        self.meter_provider.shutdown()

    def __enter__(self) -> MetricsHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _parse_exporters(raw: str) -> tuple[list[str], list[str]]:
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    problems = [
        f"{OTEL_METRICS_EXPORTER}: unknown exporter {n!r} (allowed: {', '.join(_EXPORTERS)})"
        for n in names
        if n not in _EXPORTERS
    ]
    if "none" in names and len(names) > 1:
        problems.append(f"{OTEL_METRICS_EXPORTER}: 'none' cannot be combined with other exporters")
    return names, problems


def _otlp_settings() -> tuple[str, list[str]]:
    """Validate the OTLP protocol and endpoint variables; the exporter itself reads them."""
    problems: list[str] = []
    protocol_var = OTEL_EXPORTER_OTLP_METRICS_PROTOCOL if os.environ.get(OTEL_EXPORTER_OTLP_METRICS_PROTOCOL) else (
        OTEL_EXPORTER_OTLP_PROTOCOL
    )
    protocol = (os.environ.get(protocol_var) or "grpc").strip()
    if protocol not in _PROTOCOLS:
        problems.append(f"{protocol_var}: unsupported protocol {protocol!r} (allowed: {', '.join(_PROTOCOLS)})")
    for var in (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT):
        value = os.environ.get(var)
        if not value:
            continue
        parsed = urllib.parse.urlsplit(value.strip())
        try:
            parsed_port = parsed.port
        except ValueError:
            parsed_port = -1
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed_port == -1:
            problems.append(f"{var}: {value!r} is not an endpoint URL like http://collector:4317")
    return protocol, problems


def _check_interval(problems: list[str]) -> None:
    raw = os.environ.get(OTEL_METRIC_EXPORT_INTERVAL)
    if raw is None:
        return
    try:
        ok = float(raw) > 0
    except ValueError:
        ok = False
    if not ok:
        problems.append(f"{OTEL_METRIC_EXPORT_INTERVAL}: must be a positive number of milliseconds, got {raw!r}")


def configure_metrics(
    *,
    exporters: str | Sequence[str] | None = None,
    default_exporters: str = "prometheus",
    resource: Resource | None = None,
    prometheus_port: int | None = None,
    prometheus_addr: str | None = None,
    views: Sequence[View] = (),
    set_global: bool = True,
) -> MetricsHandle:
    """Build (and by default install globally) a MeterProvider from the standard OTel environment.

    ``exporters`` overrides OTEL_METRICS_EXPORTER; when neither is given ``default_exporters``
    applies (the embedded Prometheus endpoint). Every problem found is reported at once as a
    ``ConfigurationError``.
    """
    raw = ",".join(exporters) if isinstance(exporters, (list, tuple)) else exporters
    if raw is None:
        raw = os.environ.get(OTEL_METRICS_EXPORTER) or default_exporters
    names, problems = _parse_exporters(str(raw))
    if not names:
        problems.append(f"{OTEL_METRICS_EXPORTER}: empty exporter list (use 'none' to disable)")
    protocol = "grpc"
    if "otlp" in names:
        protocol, otlp_problems = _otlp_settings()
        problems.extend(otlp_problems)
    if "otlp" in names or "console" in names:
        _check_interval(problems)
    if "prometheus" in names:
        try:
            _resolve_endpoint(prometheus_port, prometheus_addr)
        except (TypeError, ValueError) as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigurationError(problems)

    readers: list[MetricReader] = []
    server: MetricsServer | None = None
    resource = resource or Resource.create()
    all_views = [*trading_views(), *views]
    endpoint = None
    if "prometheus" in names:
        port, addr = _resolve_endpoint(prometheus_port, prometheus_addr)
        endpoint = (addr, *_prometheus_endpoint(port, addr, None, {}))
        readers.append(endpoint[1])
    if "otlp" in names:
        readers.append(PeriodicExportingMetricReader(_otlp_exporter(protocol)))
    if "console" in names:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    provider = MeterProvider(metric_readers=readers, resource=resource, views=all_views)
    if endpoint is not None:
        addr, _, registry, http_server, thread, bound = endpoint
        server = MetricsServer(addr, bound, registry, provider, http_server, thread, _owns_provider=False)
    handle = MetricsHandle(provider, tuple(names), tuple(readers), server)
    if set_global:
        try:
            _set_global(provider)
        except RuntimeError:
            handle.shutdown()
            raise
    return handle


def _otlp_exporter(protocol: str) -> Any:
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
                OTLPMetricExporter,
            )
    except ImportError as exc:
        raise ConfigurationError(
            [f"OTLP over {protocol} needs the exporter package: pip install 'otel-trading[otlp]' ({exc})"]
        ) from exc
    return OTLPMetricExporter()
