"""The ``otel-trading doctor`` subcommand: its arguments, the default metrics URL, and the run."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
from collections.abc import Callable
from typing import Any

from otel_trading.exporting import DEFAULT_METRICS_ADDR, DEFAULT_METRICS_PORT
from otel_trading.settings import OTEL_EXPORTER_PROMETHEUS_HOST, OTEL_EXPORTER_PROMETHEUS_PORT
from otel_trading.tooling.doctor.checks import run_doctor
from otel_trading.tooling.doctor.context import DEFAULT_CARDINALITY_THRESHOLD, DoctorOptions
from otel_trading.tooling.doctor.report import render_json, render_text
from otel_trading.tooling.doctor.results import exit_status

__all__ = ["add_subcommand", "default_metrics_url"]


def _url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{value!r} is not an http(s)://host[:port] URL")
    return value


def _positive(kind: type[float] | type[int]) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
        return number

    return parse


def default_metrics_url() -> str:
    """The URL the bot serves by default, from the same variables start_metrics_server reads."""
    host = os.environ.get(OTEL_EXPORTER_PROMETHEUS_HOST) or DEFAULT_METRICS_ADDR
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # a bot bound to every interface answers on loopback
    port = os.environ.get(OTEL_EXPORTER_PROMETHEUS_PORT, str(DEFAULT_METRICS_PORT)).strip()
    if not port.isdigit():
        port = str(DEFAULT_METRICS_PORT)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/metrics"


def _run(args: argparse.Namespace) -> int:
    options = DoctorOptions(
        metrics_url=args.metrics_url or default_metrics_url(),
        metrics_url_given=args.metrics_url is not None,
        prometheus_url=args.prometheus_url,
        alertmanager_url=args.alertmanager_url,
        timeout=args.timeout,
        cardinality_threshold=args.cardinality_threshold,
        cafile=args.cafile,
    )
    results = run_doctor(options)
    out = render_json(results, options, args.strict) if args.json else render_text(results, options)
    sys.stdout.write(out)
    sys.stdout.flush()
    return exit_status(results, args.strict)


def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="check the metrics pipeline (endpoint, metrics, Prometheus target, rules, Alertmanager)",
        description=(
            "Walks the monitoring guide's troubleshooting list and prints one line per check with a "
            "concrete fix. Exit status 0 when no check fails, 1 otherwise."
        ),
    )
    p.add_argument(
        "--metrics-url",
        type=_url,
        default=None,
        help="the bot's endpoint, or a collector's prometheus exporter (default from "
        f"OTEL_EXPORTER_PROMETHEUS_HOST/PORT: http://{DEFAULT_METRICS_ADDR}:{DEFAULT_METRICS_PORT}/metrics; when "
        "nothing answers there, the target Prometheus scrapes otel-trading metrics from); user:password@ in the "
        "URL is sent as basic auth",
    )
    p.add_argument("--prometheus-url", type=_url, help="e.g. http://localhost:9090 (targets, rules, alerting)")
    p.add_argument("--alertmanager-url", type=_url, help="e.g. http://localhost:9093")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    p.add_argument("--timeout", type=_positive(float), default=3.0, help="seconds per HTTP request (default 3)")
    p.add_argument(
        "--cardinality-threshold",
        type=_positive(int),
        default=DEFAULT_CARDINALITY_THRESHOLD,
        help=f"warn when a trading metric has more label sets (default {DEFAULT_CARDINALITY_THRESHOLD})",
    )
    p.add_argument("--cafile", help="CA bundle to verify an https:// metrics endpoint")
    p.set_defaults(func=_run)
