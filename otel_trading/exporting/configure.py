"""``configure_metrics()``: a MeterProvider from the standard OTel environment, backends by configuration."""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import Aggregation, ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from otel_trading.errors import ConfigurationError
from otel_trading.exporting.global_provider import install_global
from otel_trading.exporting.metrics_server import MetricsServer, prometheus_endpoint, resolve_endpoint
from otel_trading.settings import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_METRIC_EXPORT_INTERVAL,
    OTEL_METRICS_EXPORTER,
    exponential_histograms_from_env,
    trading_env_problems,
    warn_about_otel_env,
)

__all__ = ["DEFAULT_PUSH_INTERVAL_MILLIS", "MetricsHandle", "configure_metrics", "push_interval_millis"]

#: How often push exporters (OTLP, console) export unless OTEL_METRIC_EXPORT_INTERVAL says
#: otherwise: the guide's 15 s scrape interval, not the SDK's 60 s. Grafana's ``$__rate_interval``
#: for a 15 s data source is 1m, which needs at least two points per minute to show a rate.
DEFAULT_PUSH_INTERVAL_MILLIS = 15_000

_logger = logging.getLogger("otel_trading")

_EXPORTERS = ("prometheus", "otlp", "console", "none")
_PROTOCOLS = ("grpc", "http/protobuf")
_TEMPORALITIES = ("cumulative", "delta", "lowmemory")


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
    protocol_var = (
        OTEL_EXPORTER_OTLP_METRICS_PROTOCOL
        if os.environ.get(OTEL_EXPORTER_OTLP_METRICS_PROTOCOL)
        else (OTEL_EXPORTER_OTLP_PROTOCOL)
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


def push_interval_millis() -> float:
    """OTEL_METRIC_EXPORT_INTERVAL when set (and valid), else ``DEFAULT_PUSH_INTERVAL_MILLIS``."""
    raw = os.environ.get(OTEL_METRIC_EXPORT_INTERVAL)
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        value = 0.0
    return value if value > 0 else DEFAULT_PUSH_INTERVAL_MILLIS


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
    ``ConfigurationError``; likely mistakes in standard ``OTEL_*`` variables that the SDK would
    ignore (a misspelt name, an OTLP/HTTP endpoint without ``/v1/metrics``) are logged as warnings.

    Histograms get the guide's explicit buckets unless
    OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION is ``base2_exponential_bucket_histogram``:
    then the OTLP and console readers get base-2 exponential ones (native histograms in Prometheus 3),
    and the Prometheus reader keeps explicit buckets, with a WARNING, since its exporter drops
    exponential histograms. ``views`` are added as given.
    """
    warn_about_otel_env()
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
            resolve_endpoint(prometheus_port, prometheus_addr)
        except (TypeError, ValueError) as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigurationError(problems)

    readers: list[MetricReader] = []
    server: MetricsServer | None = None
    push_ms = push_interval_millis()
    resource = resource or Resource.create()
    # No explicit-bucket views: the instruments' advisory boundaries give the guide's buckets, and a
    # view would override the exponential aggregation a reader prefers.
    exponential = exponential_histograms_from_env()
    push_aggregation: dict[type, Aggregation] = (
        {Histogram: ExponentialBucketHistogramAggregation()} if exponential else {}
    )
    endpoint = None
    if "prometheus" in names:
        if exponential:
            _logger.warning(
                "otel-trading: %s asks for exponential histograms, but the Prometheus exporter (/metrics) "
                "drops them, so it keeps explicit buckets; native histograms reach Prometheus 3 through "
                "OTLP or the collector's remote write (README: Exporting)",
                OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION,
            )
        port, addr = resolve_endpoint(prometheus_port, prometheus_addr)
        endpoint = (addr, *prometheus_endpoint(port, addr, None, {}))
        readers.append(endpoint[1])
    if "otlp" in names:
        readers.append(
            PeriodicExportingMetricReader(_otlp_exporter(protocol, push_aggregation), export_interval_millis=push_ms)
        )
    if "console" in names:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        # The console shows what OTLP would send, so it follows the OTLP aggregation variable too.
        console = ConsoleMetricExporter(preferred_aggregation=push_aggregation)
        readers.append(PeriodicExportingMetricReader(console, export_interval_millis=push_ms))
    provider = MeterProvider(metric_readers=readers, resource=resource, views=list(views))
    if endpoint is not None:
        addr, _, registry, http_server, thread, bound = endpoint
        server = MetricsServer(addr, bound, registry, provider, http_server, thread, _owns_provider=False)
    handle = MetricsHandle(provider, tuple(names), tuple(readers), server)
    if set_global:
        try:
            install_global(provider)
        except RuntimeError:
            handle.shutdown()
            raise
    return handle


def _otlp_exporter(protocol: str, preferred_aggregation: dict[type, Aggregation]) -> Any:
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
    # Passed explicitly: the gRPC exporter reads the aggregation variable case-sensitively.
    return OTLPMetricExporter(preferred_aggregation=preferred_aggregation or None)
