"""Settings: the environment variables otel-trading reads, their parsing, and argument checks.

Variable names are constants (the OTel SDK's own ones are re-exported so all names live here);
only knobs OpenTelemetry has no variable for get an ``OTEL_TRADING_`` name. Every check raises a
``TypeError``/``ValueError`` naming the argument or variable and its allowed range.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from numbers import Real
from typing import Any

# Standard OTel variables we honour; re-exported so all names live in one place.
from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_PROMETHEUS_HOST,
    OTEL_EXPORTER_PROMETHEUS_PORT,
    OTEL_METRIC_EXPORT_INTERVAL,
    OTEL_METRIC_EXPORT_TIMEOUT,
    OTEL_METRICS_EXEMPLAR_FILTER,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SERVICE_NAME,
)

from otel_trading import metric_contract as mc

_logger = logging.getLogger("otel_trading")

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

#: ``true``: the library instrumentations use their pure-Python hot paths even when the compiled
#: ones (each library home's ``_hooks`` module) are built. Read once, at import.
OTEL_TRADING_PURE_PYTHON = "OTEL_TRADING_PURE_PYTHON"

#: The values of OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION (matched case-insensitively,
#: as the OTLP/HTTP exporter does; the gRPC one compares case-sensitively, so we pass it the result).
HISTOGRAM_AGGREGATIONS = ("explicit_bucket_histogram", "base2_exponential_bucket_histogram")

#: The values of OTEL_METRICS_EXEMPLAR_FILTER, exactly as the SDK's MeterProvider accepts them.
EXEMPLAR_FILTERS = ("trace_based", "always_on", "always_off")


__all__ = [
    "DEFAULT_MAX_LABEL_VALUES",
    "EXEMPLAR_FILTERS",
    "HISTOGRAM_AGGREGATIONS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_PROMETHEUS_HOST",
    "OTEL_EXPORTER_PROMETHEUS_PORT",
    "OTEL_METRICS_EXEMPLAR_FILTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_METRIC_EXPORT_TIMEOUT",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SERVICE_NAME",
    "OTEL_TRADING_DISABLED_METRICS",
    "OTEL_TRADING_HISTOGRAM_SAMPLE_RATE",
    "OTEL_TRADING_INSTRUMENT",
    "OTEL_TRADING_MAX_LABEL_VALUES",
    "OTEL_TRADING_PURE_PYTHON",
    "check_bool",
    "check_int",
    "check_name",
    "check_number",
    "check_port",
    "check_rate",
    "disabled_metrics_from_env",
    "exemplar_filter_from_env",
    "exponential_histograms_from_env",
    "max_label_values_from_env",
    "near_miss",
    "otel_env_warnings",
    "parse_disabled_metrics",
    "pure_python_from_env",
    "resolve_sample_rate",
    "trading_env_problems",
    "warn_about_otel_env",
]

# -- argument checks ----------------------------------------------------------------------------------


def check_name(arg: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{arg} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{arg} must be a non-empty string")
    return value


def check_int(arg: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg} must be an int, got {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{arg} must be >= {minimum}{upper}, got {value}")
    return value


def check_number(arg: str, value: Any, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{arg} must be a number of seconds, got {type(value).__name__}")
    as_float = float(value)
    if not math.isfinite(as_float) or as_float < minimum:
        raise ValueError(f"{arg} must be a finite number >= {minimum}, got {value!r}")
    return as_float


def check_rate(arg: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{arg} must be a number in [0, 1], got {type(value).__name__}")
    as_float = float(value)
    if not 0.0 <= as_float <= 1.0:
        raise ValueError(f"{arg} must be in [0, 1], got {value!r}")
    return as_float


def check_bool(arg: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{arg} must be a bool, got {type(value).__name__}")
    return value


def check_port(arg: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg} must be an int port number, got {type(value).__name__}")
    if not 0 <= value <= 65535:
        raise ValueError(f"{arg} must be a port in 0..65535 (0 picks a free one), got {value}")
    return value


# -- OTEL_TRADING_* parsing ---------------------------------------------------------------------------

DEFAULT_MAX_LABEL_VALUES = 1000


def disabled_metrics_from_env() -> frozenset[str]:
    raw = os.environ.get(OTEL_TRADING_DISABLED_METRICS, "")
    return parse_disabled_metrics(raw, source=OTEL_TRADING_DISABLED_METRICS)


def parse_disabled_metrics(raw: str | Iterable[str], source: str = "disabled_metrics") -> frozenset[str]:
    """Validate a list of metric groups/keys; returns the set of disabled metric keys."""
    items = [p.strip() for p in raw.split(",")] if isinstance(raw, str) else [str(p).strip() for p in raw]
    groups = {g.value: g for g in mc.MetricGroup}
    keys: set[str] = set()
    bad: list[str] = []
    for item in filter(None, items):
        if item in groups:
            keys.update(m.key for m in mc.METRICS if m.group is groups[item])
        elif item in mc.METRICS_BY_KEY:
            keys.add(item)
        elif any(m.prometheus_name == item for m in mc.METRICS):
            keys.update(m.key for m in mc.METRICS if m.prometheus_name == item)
        else:
            bad.append(item)
    if bad:
        allowed = sorted(groups) + sorted(mc.METRICS_BY_KEY)
        raise ValueError(f"{source}: unknown metric group or key {bad!r}; allowed: {', '.join(allowed)}")
    return frozenset(keys)


def resolve_sample_rate(sample_rate: float | None) -> float:
    """The component's ``sample_rate``, defaulting to OTEL_TRADING_HISTOGRAM_SAMPLE_RATE, else 1.0."""
    if sample_rate is not None:
        return check_rate("sample_rate", sample_rate)
    raw = os.environ.get(OTEL_TRADING_HISTOGRAM_SAMPLE_RATE, "").strip()
    if not raw:
        return 1.0
    try:
        return check_rate(OTEL_TRADING_HISTOGRAM_SAMPLE_RATE, float(raw))
    except ValueError:
        raise ValueError(f"{OTEL_TRADING_HISTOGRAM_SAMPLE_RATE} must be a number in [0, 1], got {raw!r}") from None


def max_label_values_from_env() -> int:
    raw = os.environ.get(OTEL_TRADING_MAX_LABEL_VALUES)
    if raw is None or raw.strip() == "":
        return DEFAULT_MAX_LABEL_VALUES
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{OTEL_TRADING_MAX_LABEL_VALUES} must be an integer >= 1, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{OTEL_TRADING_MAX_LABEL_VALUES} must be an integer >= 1, got {raw!r}")
    return value


def pure_python_from_env() -> bool:
    """``OTEL_TRADING_PURE_PYTHON`` as a bool (unset: False)."""
    raw = os.environ.get(OTEL_TRADING_PURE_PYTHON, "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise ValueError(f"{OTEL_TRADING_PURE_PYTHON} must be true or false, got {raw!r}")


def exponential_histograms_from_env() -> bool:
    """True when OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION asks for base-2 exponential buckets."""
    raw = os.environ.get(OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION, "").strip().lower()
    if not raw:
        return False
    if raw not in HISTOGRAM_AGGREGATIONS:
        raise ValueError(
            f"{OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION}: {raw!r} is not one of "
            f"{', '.join(HISTOGRAM_AGGREGATIONS)}"
        )
    return raw == HISTOGRAM_AGGREGATIONS[1]


def exemplar_filter_from_env() -> str:
    """OTEL_METRICS_EXEMPLAR_FILTER (default ``trace_based``), checked as the SDK's MeterProvider would."""
    raw = os.environ.get(OTEL_METRICS_EXEMPLAR_FILTER, EXEMPLAR_FILTERS[0])
    # The SDK compares exactly and raises from the MeterProvider constructor; say so at start-up instead.
    if raw not in EXEMPLAR_FILTERS:
        raise ValueError(f"{OTEL_METRICS_EXEMPLAR_FILTER}: {raw!r} is not one of {', '.join(EXEMPLAR_FILTERS)}")
    return raw


def trading_env_problems() -> list[str]:
    """Every problem with the ``OTEL_TRADING_*`` variables (and the two histogram/exemplar OTel ones).

    Malformed values and likely typos are reported.

    An unknown ``OTEL_TRADING_*`` name close to a known one (``..._MAX_LABEL_VALUE``) is an error,
    since the setting it was meant for is silently not applied; other unknown names are only logged
    (tools around the package may use the prefix too).
    """
    problems: list[str] = []
    # The same parsers the components use, so start-up rejects exactly what they would.
    checks: tuple[Callable[[], object], ...] = (
        disabled_metrics_from_env,
        lambda: resolve_sample_rate(None),
        max_label_values_from_env,
        pure_python_from_env,
        exponential_histograms_from_env,
        exemplar_filter_from_env,
    )
    for check in checks:
        try:
            check()
        except (TypeError, ValueError) as exc:
            problems.append(str(exc))
    prefix = "OTEL_TRADING_"
    known = sorted(n for n in __all__ if n.startswith(prefix))
    for name in sorted(os.environ):
        if not name.startswith(prefix) or name in known:
            continue
        close = difflib.get_close_matches(name[len(prefix) :], [k[len(prefix) :] for k in known], n=1, cutoff=0.75)
        if close:
            problems.append(f"{name}: unknown variable (did you mean {prefix}{close[0]}?); known: {', '.join(known)}")
        else:
            _logger.warning("otel-trading: ignoring unknown variable %s (known: %s)", name, ", ".join(known))
    return problems


# -- standard OTEL_* variables: likely mistakes the SDK ignores silently ------------------------------

# Standard names the OTel packages do not declare as constants, but that bots commonly set.
_MORE_KNOWN_OTEL_NAMES = (
    "OTEL_PYTHON_LOG_CORRELATION",
    "OTEL_PYTHON_LOG_FORMAT",
    "OTEL_PYTHON_LOG_LEVEL",
    "OTEL_PYTHON_EXCLUDED_URLS",
    "OTEL_SEMCONV_STABILITY_OPT_IN",
)


def _known_otel_names() -> frozenset[str]:
    """Every standard ``OTEL_*`` variable the installed OpenTelemetry packages declare."""
    import importlib

    names = set(_MORE_KNOWN_OTEL_NAMES)
    for module_name in (
        "opentelemetry.environment_variables",
        "opentelemetry.sdk.environment_variables",
        "opentelemetry.instrumentation.environment_variables",  # the instrumentation extra
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        names.update(
            value
            for key, value in vars(module).items()
            if key.isupper() and isinstance(value, str) and value.startswith("OTEL_")
        )
    return frozenset(names)


def _edit_distance(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) turning ``a`` into ``b``."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def near_miss(name: str, known: Iterable[str], max_edits: int = 2) -> str | None:
    """The one name of ``known`` at most ``max_edits`` edits from ``name`` (None if none is)."""
    best: tuple[int, str] | None = None
    for candidate in known:
        if abs(len(candidate) - len(name)) > max_edits:
            continue
        distance = _edit_distance(name, candidate)
        if distance <= max_edits and (best is None or distance < best[0]):
            best = (distance, candidate)
    return best[1] if best is not None else None


def otel_env_warnings(environ: Mapping[str, str] | None = None) -> list[str]:
    """Likely mistakes in the standard ``OTEL_*`` variables, which the SDK silently ignores.

    - an unknown ``OTEL_*`` name one or two letters away from a standard one
      (``OTEL_METRIC_EXPORTER``, ``OTEL_EXPORTER_PROMETHEUS_PROT``); other unknown names are left
      alone, as instrumentations define many of their own;
    - an OTLP/HTTP metrics endpoint without a path: ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is used
      as is, so ``http://collector:4318`` gets HTTP 404 on every export.
    """
    env = os.environ if environ is None else environ
    warnings: list[str] = []
    known = _known_otel_names()
    for name in sorted(env):
        if not name.startswith("OTEL_") or name.startswith("OTEL_TRADING_") or name in known:
            continue
        close = near_miss(name, known)
        if close is not None:
            warnings.append(f"{name} is not an OpenTelemetry variable and is ignored: did you mean {close}?")
    protocol = (env.get(OTEL_EXPORTER_OTLP_METRICS_PROTOCOL) or env.get(OTEL_EXPORTER_OTLP_PROTOCOL) or "").strip()
    endpoint = (env.get(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT) or "").strip()
    if protocol.startswith("http/") and endpoint:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme in ("http", "https") and parts.path in ("", "/"):
            base = endpoint.rstrip("/")
            warnings.append(
                f"{OTEL_EXPORTER_OTLP_METRICS_ENDPOINT}={endpoint!r} has no path: over {protocol} it is used as "
                f"is and a collector answers HTTP 404 to every export; use {base}/v1/metrics, or set "
                f"{OTEL_EXPORTER_OTLP_ENDPOINT}={base} (the exporter appends /v1/metrics to that one)"
            )
    return warnings


_warned: set[str] = set()


def warn_about_otel_env(logger: logging.Logger | None = None) -> list[str]:
    """Log each of ``otel_env_warnings()`` once per process (start-up paths may each call this)."""
    warnings = otel_env_warnings()
    for message in warnings:
        if message not in _warned:
            _warned.add(message)
            (logger or _logger).warning("otel-trading: %s", message)
    return warnings
