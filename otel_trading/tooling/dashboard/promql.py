"""PromQL for the dashboard's panels, built from the metric contract so every name and label is checked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from otel_trading.metric_contract import InstrumentKind, MetricSpec

__all__ = [
    "TARGET_LABELS",
    "contract_label",
    "gauge_max",
    "increase",
    "increase_above",
    "native_selector",
    "quantile",
    "rate",
    "selector",
]

#: Labels Prometheus adds to every series (from the scrape target, or from ``service.name`` /
#: ``service.instance.id`` on the OTLP and collector paths): every query filters by both, so one
#: dashboard serves a fleet of bots, and per-bot panels group by ``instance``.
TARGET_LABELS: dict[str, str] = {"job": "job", "instance": "instance"}


def contract_label(spec: MetricSpec, label: str) -> str:
    """``label``, after checking the contract declares it for ``spec`` (or Prometheus adds it)."""
    if label not in spec.labels and label not in TARGET_LABELS:
        raise ValueError(f"{spec.prometheus_name} has no label {label!r} (labels: {spec.labels})")
    return label


def _series(spec: MetricSpec, suffix: str = "") -> str:
    """A sample name of ``spec`` (``suffix`` selects ``_bucket`` etc. of a histogram)."""
    name = spec.prometheus_name + suffix
    if name not in spec.series_names:
        raise ValueError(f"{name} is not a series of {spec.prometheus_name} ({spec.series_names})")
    return name


def _by(spec: MetricSpec, *labels: str) -> str:
    # ``le`` is the classic bucket label every histogram series carries.
    return ", ".join(
        lbl if lbl == "le" and spec.kind is InstrumentKind.HISTOGRAM else contract_label(spec, lbl) for lbl in labels
    )


def _matchers(spec: MetricSpec, filters: Mapping[str, str] | None) -> str:
    every = {**TARGET_LABELS, **(filters or {})}
    return ", ".join(f'{contract_label(spec, lbl)}=~"${var}"' for lbl, var in every.items())


def selector(spec: MetricSpec, suffix: str = "", filters: Mapping[str, str] | None = None) -> str:
    """``name{job=~"$job", instance=~"$instance", label=~"$var", ...}`` for the given
    {label: dashboard variable} filters; the fleet filters are always there."""
    return f"{_series(spec, suffix)}{{{_matchers(spec, filters)}}}"


def native_selector(spec: MetricSpec, filters: Mapping[str, str] | None = None) -> str:
    """:func:`selector` of the native histogram series of ``spec`` (Prometheus 3 stores an OTLP
    exponential histogram as one series under the plain name)."""
    name = spec.native_series_name
    if name is None:
        raise ValueError(f"{spec.prometheus_name} is not a histogram")
    return f"{name}{{{_matchers(spec, filters)}}}"


def _sum_by(group: str, expr: str) -> str:
    """``sum by (group) (expr)``, or ``sum(expr)`` when there is nothing to group by."""
    return f"sum by ({group}) ({expr})" if group else f"sum({expr})"


def rate(spec: MetricSpec, by: Sequence[str], filters: Mapping[str, str] | None = None) -> str:
    """Per-second rate of a counter, summed over everything but ``by``."""
    if spec.kind is not InstrumentKind.COUNTER:
        raise ValueError(f"rate() of non-counter {spec.prometheus_name}")
    return f"sum by ({_by(spec, *by)}) (rate({selector(spec, '', filters)}[$__rate_interval]))"


def increase(spec: MetricSpec, by: Sequence[str], filters: Mapping[str, str] | None = None) -> str:
    """Increase of a counter per rate interval, summed over everything but ``by``."""
    if spec.kind is not InstrumentKind.COUNTER:
        raise ValueError(f"increase() of non-counter {spec.prometheus_name}")
    return f"sum by ({_by(spec, *by)}) (increase({selector(spec, '', filters)}[$__rate_interval]))"


def gauge_max(spec: MetricSpec, by: Sequence[str], filters: Mapping[str, str] | None = None) -> str:
    """Largest value per ``by`` group: the same series scraped twice must not add up."""
    if spec.kind is not InstrumentKind.GAUGE:
        raise ValueError(f"{spec.prometheus_name} is not a gauge")
    return f"max by ({_by(spec, *by)}) ({selector(spec, '', filters)})"


def quantile(spec: MetricSpec, q: float, by: Sequence[str], filters: Mapping[str, str] | None = None) -> str:
    """The ``q`` quantile of a histogram per ``by`` group: from the classic ``_bucket`` series, or else
    from the native histogram (``or``: a group with both kinds shows the classic estimate)."""
    if spec.kind is not InstrumentKind.HISTOGRAM:
        raise ValueError(f"{spec.prometheus_name} is not a histogram")
    classic = _sum_by(_by(spec, *by, "le"), f"rate({selector(spec, '_bucket', filters)}[$__rate_interval])")
    native = _sum_by(_by(spec, *by), f"rate({native_selector(spec, filters)}[$__rate_interval])")
    return f"histogram_quantile({q}, {classic}) or histogram_quantile({q}, {native})"


def increase_above(spec: MetricSpec, bound: float, by: Sequence[str], filters: Mapping[str, str] | None = None) -> str:
    """How many observations of a histogram exceeded the bucket boundary ``bound`` per rate interval,
    per ``by`` group: the classic count minus that bucket's, or else the native histogram's count times
    its fraction above ``bound`` (an estimate: Prometheus interpolates inside the native bucket that
    holds ``bound``)."""
    if spec.kind is not InstrumentKind.HISTOGRAM:
        raise ValueError(f"{spec.prometheus_name} is not a histogram")
    if bound not in (spec.buckets or ()):
        raise ValueError(f"{bound} is not a bucket boundary of {spec.prometheus_name} ({spec.buckets})")
    group = _by(spec, *by)
    count = selector(spec, "_count", filters)
    # str() renders the boundary as both export paths (and Prometheus 3's normalisation) write ``le``.
    bucket = selector(spec, "_bucket", filters)[:-1] + f', le="{bound}"}}'
    native = _sum_by(group, f"increase({native_selector(spec, filters)}[$__rate_interval])")
    return (
        f"({_sum_by(group, f'increase({count}[$__rate_interval])')} "
        f"- {_sum_by(group, f'increase({bucket}[$__rate_interval])')}) "
        f"or (histogram_count({native}) * histogram_fraction({bound}, +Inf, {native}))"
    )
