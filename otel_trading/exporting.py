"""Getting metrics out: the embedded Prometheus endpoint and env-driven MeterProvider set-up.

``start_metrics_server()`` is the guide's one-liner. ``configure_metrics()`` builds the provider
from the standard OTel variables (``OTEL_METRICS_EXPORTER`` = prometheus | otlp | console | none,
``OTEL_EXPORTER_OTLP_*``, ``OTEL_SERVICE_NAME``, ...), so backends are swapped by configuration.
Both add otel-trading's views, which fix the duration buckets (histograms take the fast path either way).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import errno
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, CollectorRegistry

from otel_trading import environment_variables
from otel_trading.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_PROMETHEUS_HOST,
    OTEL_EXPORTER_PROMETHEUS_PORT,
    OTEL_METRIC_EXPORT_INTERVAL,
    OTEL_METRICS_EXPORTER,
)
from otel_trading.recording import views as trading_views
from otel_trading.validation import check_bool, check_port

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
_TEMPORALITIES = ("cumulative", "delta", "lowmemory")


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
    elif not isinstance(addr, str):
        raise TypeError(f"addr must be a host string, got {type(addr).__name__}")
    elif not addr.strip():
        raise ValueError("addr must be a non-empty host such as '127.0.0.1' or '0.0.0.0'")
    return port, addr


def trading_env_problems() -> list[str]:
    """Every problem with the ``OTEL_TRADING_*`` variables: malformed values and likely typos.

    An unknown ``OTEL_TRADING_*`` name close to a known one (``..._MAX_LABEL_VALUE``) is an error,
    since the setting it was meant for is silently not applied; other unknown names are only logged
    (tools around the package may use the prefix too).
    """
    from otel_trading.recording import settings

    problems: list[str] = []
    # The same parsers the components use, so start-up rejects exactly what they would.
    checks: tuple[Callable[[], object], ...] = (
        settings.disabled_metrics_from_env,
        lambda: settings.resolve_sample_rate(None),
        settings.max_label_values_from_env,
    )
    for check in checks:
        try:
            check()
        except (TypeError, ValueError) as exc:
            problems.append(str(exc))
    prefix = "OTEL_TRADING_"
    known = sorted(n for n in environment_variables.__all__ if n.startswith(prefix))
    for name in sorted(os.environ):
        if not name.startswith(prefix) or name in known:
            continue
        close = difflib.get_close_matches(
            name[len(prefix) :], [k[len(prefix) :] for k in known], n=1, cutoff=0.75
        )
        if close:
            problems.append(
                f"{name}: unknown variable (did you mean {prefix}{close[0]}?); known: {', '.join(known)}"
            )
        else:
            _logger.warning("otel-trading: ignoring unknown variable %s (known: %s)", name, ", ".join(known))
    return problems


# -- TLS and basic auth for /metrics -----------------------------------------------------------------


def _check_file(arg: str, value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{arg} must be a path (str or os.PathLike), got {type(value).__name__}")
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"{arg}: no such file {str(path)!r}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{arg}: file {str(path)!r} is not readable by this process")
    return str(path)


def _tls_options(
    certfile: Any, keyfile: Any, client_cafile: Any, client_auth_required: Any
) -> dict[str, Any]:
    """Validated keyword arguments for prometheus_client's TLS server ({} for plain HTTP)."""
    check_bool("client_auth_required", client_auth_required)
    if (certfile is None) != (keyfile is None):
        given = "certfile" if certfile is not None else "keyfile"
        # prometheus_client would silently serve plain HTTP with only one of them.
        raise ValueError(f"certfile and keyfile must be given together to serve HTTPS; got only {given}")
    if certfile is None:
        if client_cafile is not None or client_auth_required:
            raise ValueError("client_cafile/client_auth_required need certfile and keyfile (mutual TLS)")
        return {}
    options: dict[str, Any] = {
        "certfile": _check_file("certfile", certfile),
        "keyfile": _check_file("keyfile", keyfile),
    }
    if client_auth_required and client_cafile is None:
        raise ValueError("client_auth_required=True needs client_cafile: the CA that signs scrapers' certs")
    if client_cafile is not None:
        options["client_cafile"] = _check_file("client_cafile", client_cafile)
    if client_auth_required:
        options["client_auth_required"] = True
    return options


def _check_basic_auth(value: Any) -> tuple[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError("basic_auth must be a (username, password) pair")
    username, password = value
    if not isinstance(username, str) or not isinstance(password, str):
        raise TypeError("basic_auth username and password must be str")
    if not username or ":" in username:
        raise ValueError("basic_auth username must be non-empty and contain no ':'")
    if not password:
        raise ValueError("basic_auth password must be non-empty")
    return username, password


class _BasicAuth:
    """WSGI middleware: answers 401 unless the request carries the configured basic credentials.

    Only a SHA-256 of ``user:password`` is kept; comparison is constant-time.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], username: str, password: str) -> None:
        self._app = app
        self._expected = hashlib.sha256(f"{username}:{password}".encode()).digest()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self._authorized(environ.get("HTTP_AUTHORIZATION", "")):
            return self._app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [
                ("WWW-Authenticate", 'Basic realm="otel-trading metrics", charset="UTF-8"'),
                ("Content-Type", "text/plain; charset=utf-8"),
            ],
        )
        return [b"401 Unauthorized: this /metrics endpoint requires HTTP basic auth\n"]

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            raw = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(hashlib.sha256(raw).digest(), self._expected)


def _ssl_context(options: dict[str, Any]) -> ssl.SSLContext:
    """The context prometheus_client would build for the same options."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if "client_cafile" in options:
        ctx.load_verify_locations(cafile=options["client_cafile"])
    if options.get("client_auth_required"):
        ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(certfile=options["certfile"], keyfile=options["keyfile"])
    return ctx


def _start_auth_server(
    registry: CollectorRegistry, port: int, addr: str, tls: dict[str, Any], auth: tuple[str, str]
) -> tuple[Any, Any]:
    """prometheus_client's server, with the basic-auth middleware in front of its WSGI app.

    prometheus_client has no server-side auth and builds its app internally, so the server is put
    together here from its public pieces; the middleware is in place before the first request.
    """
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    app = _BasicAuth(make_wsgi_app(registry), *auth)
    httpd = make_server(sockaddr[0], port, app, Server, handler_class=QuietHandler)
    if tls:
        try:
            httpd.socket = _ssl_context(tls).wrap_socket(httpd.socket, server_side=True)
        except BaseException:
            httpd.server_close()
            raise
    thread = threading.Thread(target=httpd.serve_forever, name="otel-trading-metrics", daemon=True)
    thread.start()
    return httpd, thread


def _is_loopback(addr: str) -> bool:
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def _serve(
    registry: CollectorRegistry, port: int, addr: str, auth: tuple[str, str] | None = None, **tls: Any
) -> tuple[Any, Any, int]:
    from prometheus_client import start_http_server

    try:
        if auth is None:
            server, thread = start_http_server(port, addr=addr, registry=registry, **tls)
        else:
            server, thread = _start_auth_server(registry, port, addr, tls, auth)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise OSError(exc.errno, f"metrics server: port {port} on {addr} is already in use") from exc
        raise OSError(exc.errno, f"metrics server: cannot listen on {addr}:{port}: {exc.strerror or exc}") from exc
    return server, thread, int(server.server_port)


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

    class _RegistryReader(PrometheusMetricReader):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            REGISTRY.unregister(self._collector)
            registry.register(self._collector)

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            registry.unregister(self._collector)

    return _RegistryReader()


def _prometheus_endpoint(
    port: int,
    addr: str,
    registry: CollectorRegistry | None,
    tls: dict[str, Any],
    auth: tuple[str, str] | None = None,
) -> tuple[MetricReader, CollectorRegistry, Any, Any, int]:
    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    reader = prometheus_reader(registry)
    try:
        server, thread, bound = _serve(registry, port, addr, auth, **tls)
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
    port, addr = _resolve_endpoint(port, addr)
    check_bool("set_global", set_global)
    if registry is not None and not isinstance(registry, CollectorRegistry):
        raise TypeError(f"registry must be a prometheus_client CollectorRegistry, not {type(registry).__name__}")
    tls = _tls_options(certfile, keyfile, client_cafile, client_auth_required)
    auth = _check_basic_auth(basic_auth)
    if auth is not None and not tls and not _is_loopback(addr):
        _logger.warning(
            "otel-trading: /metrics on %s uses basic auth over plain HTTP; the password crosses the network "
            "in clear text (pass certfile/keyfile)",
            addr,
        )
    reader, registry, server, thread, bound = _prometheus_endpoint(port, addr, registry, tls, auth)
    provider = MeterProvider(
        metric_readers=[reader], resource=resource or Resource.create(), views=[*trading_views(), *views]
    )
    handle = MetricsServer(addr, bound, registry, provider, server, thread, scheme="https" if tls else "http")
    if set_global:
        try:
            _set_global(provider)
        except RuntimeError:
            handle.close()
            raise
    return handle


def _set_global(provider: MeterProvider) -> None:
    from otel_trading.recording import global_provider_is_set

    if global_provider_is_set():
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
    # The OTLP exporter would only log an unknown preference and fall back to cumulative.
    temporality = os.environ.get(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, "").strip().lower()
    if temporality and temporality not in _TEMPORALITIES:
        problems.append(
            f"{OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE}: {temporality!r} is not one of "
            f"{', '.join(_TEMPORALITIES)}"
        )
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
    problems.extend(trading_env_problems())
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
