"""The OTEL_TRADING_* settings the recording layer reads: parsed and checked, errors naming the variable."""

from __future__ import annotations

import os
from collections.abc import Iterable

from otel_trading import metric_contract as mc
from otel_trading.environment_variables import (
    OTEL_TRADING_DISABLED_METRICS,
    OTEL_TRADING_HISTOGRAM_SAMPLE_RATE,
    OTEL_TRADING_MAX_LABEL_VALUES,
)
from otel_trading.validation import check_rate

__all__ = [
    "DEFAULT_MAX_LABEL_VALUES",
    "disabled_metrics_from_env",
    "max_label_values_from_env",
    "parse_disabled_metrics",
    "resolve_sample_rate",
]

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
