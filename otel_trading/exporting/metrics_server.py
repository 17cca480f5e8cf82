"""The embedded Prometheus endpoint: ``start_metrics_server()`` and the handle it returns."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, CollectorRegistry

from otel_trading.errors import ConfigurationError
from otel_trading.exporting.global_provider import install_global
from otel_trading.exporting.http_server import check_basic_auth, is_loopback, serve, tls_options
from otel_trading.recording import views as trading_views
from otel_trading.settings import (
    OTEL_EXPORTER_PROMETHEUS_HOST,
    OTEL_EXPORTER_PROMETHEUS_PORT,
    check_bool,
    check_port,
    trading_env_problems,
)

__all__ = [
    "DEFAULT_METRICS_ADDR",
    "DEFAULT_METRICS_PORT",
    "MetricsServer",
    "prometheus_endpoint",
    "prometheus_reader",
    "resolve_endpoint",
    "start_metrics_server",
]

_logger = logging.getLogger("otel_trading.exporting")

#: Loopback by default: /metrics is not exposed to the network unless asked. In a container
#: (compose, Kubernetes) pass ``addr="0.0.0.0"`` or set OTEL_EXPORTER_PROMETHEUS_HOST=0.0.0.0.
DEFAULT_METRICS_ADDR = "127.0.0.1"
#: The guide's port.
DEFAULT_METRICS_PORT = 8000


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
    #: "https" when served with ``certfile``/``keyfile``.
    scheme: str = "http"

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"{self.scheme}://{host}:{self.port}/metrics"

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


def resolve_endpoint(port: int | None, addr: str | None) -> tuple[int, str]:
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
    elif not isinstance(addr, str):
        raise TypeError(f"addr must be a host string, got {type(addr).__name__}")
    elif not addr.strip():
        raise ValueError("addr must be a non-empty host such as '127.0.0.1' or '0.0.0.0'")
    return port, addr


def prometheus_reader(registry: CollectorRegistry) -> MetricReader:
    """A ``PrometheusMetricReader`` serving into ``registry``, on every supported exporter version.

    Exporters before 0.62b0 only register on prometheus_client's global ``REGISTRY``; there the
    reader's collector is moved to ``registry`` (and taken out of it again at shutdown).
    """
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    try:
        return PrometheusMetricReader(registry=registry)
    except TypeError:
        pass

    class _RegistryReader(PrometheusMetricReader):
        def __init__(self) -> None:
            super().__init__()
            REGISTRY.unregister(self._collector)
            registry.register(self._collector)

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            registry.unregister(self._collector)

    return _RegistryReader()


def prometheus_endpoint(
    port: int,
    addr: str,
    registry: CollectorRegistry | None,
    tls: dict[str, Any],
    auth: tuple[str, str] | None = None,
) -> tuple[MetricReader, CollectorRegistry, Any, Any, int]:
    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    reader = prometheus_reader(registry)
    try:
        server, thread, bound = serve(registry, port, addr, auth, **tls)
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
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    client_cafile: str | os.PathLike[str] | None = None,
    client_auth_required: bool = False,
    basic_auth: tuple[str, str] | None = None,
) -> MetricsServer:
    """Serve OTel metrics in Prometheus format at ``http://addr:port/metrics``.

    ``port``/``addr`` default to OTEL_EXPORTER_PROMETHEUS_PORT/HOST, else 8000 on 127.0.0.1
    (``port=0`` picks a free port; read it back from ``.port``). The provider behind it becomes
    the global one (``set_global``) so components created without ``meter_provider=`` report here.

    ``certfile``/``keyfile`` (PEM, both or neither) serve HTTPS; ``client_cafile`` with
    ``client_auth_required=True`` also demands a client certificate signed by that CA (mutual TLS).
    ``basic_auth=(username, password)`` answers 401 to scrapes without those credentials; read the
    password from a secret file or the environment, never from source code.
    """
    problems = trading_env_problems()
    if problems:
        raise ConfigurationError(problems)
    port, addr = resolve_endpoint(port, addr)
    check_bool("set_global", set_global)
    if registry is not None and not isinstance(registry, CollectorRegistry):
        raise TypeError(f"registry must be a prometheus_client CollectorRegistry, not {type(registry).__name__}")
    tls = tls_options(certfile, keyfile, client_cafile, client_auth_required)
    auth = check_basic_auth(basic_auth)
    if auth is not None and not tls and not is_loopback(addr):
        _logger.warning(
            "otel-trading: /metrics on %s uses basic auth over plain HTTP; the password crosses the network "
            "in clear text (pass certfile/keyfile)",
            addr,
        )
    reader, registry, server, thread, bound = prometheus_endpoint(port, addr, registry, tls, auth)
    provider = MeterProvider(
        metric_readers=[reader], resource=resource or Resource.create(), views=[*trading_views(), *views]
    )
    handle = MetricsServer(addr, bound, registry, provider, server, thread, scheme="https" if tls else "http")
    if set_global:
        try:
            install_global(provider)
        except RuntimeError:
            handle.close()
            raise
    return handle
