"""The metric contract against the guide, the README, and the real Prometheus exporter's naming."""

from __future__ import annotations

import re

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from otel_trading.exporting import prometheus_reader
from otel_trading.metric_contract import DURATION_BUCKETS, METRICS, InstrumentKind, documented_metrics
from otel_trading.tooling.metrics_reference import BEGIN, END, render_table

from ..realprocs import IN_CI, REPO, family_types

GUIDE = REPO.parent / "shared" / "spec" / "monitoring-guide.md"


def _guide_names() -> set[str]:
    if not GUIDE.exists():
        if IN_CI:
            pytest.fail(f"{GUIDE} is missing: CI runs with shared/ beside the repo")
        pytest.skip("monitoring guide not beside the checkout")
    section = GUIDE.read_text().split("## Metrics Reference", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M))


def test_documented_metrics_are_exactly_the_guides_metrics_reference() -> None:
    assert {m.prometheus_name for m in documented_metrics()} == _guide_names()


def test_readme_metrics_reference_is_generated_from_the_contract() -> None:
    readme = (REPO / "README.md").read_text()
    assert BEGIN in readme and END in readme, "README lacks the generated Metrics Reference block"
    block = readme[readme.index(BEGIN) : readme.index(END) + len(END)] + "\n"
    assert block == render_table(), "README table is stale: run `python tools/regenerate.py`"


def test_otel_names_render_as_the_contract_names_in_the_prometheus_exporter() -> None:
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[prometheus_reader(registry)])
    meter = provider.get_meter("contract-test")
    for spec in METRICS:
        attrs = dict.fromkeys(spec.labels, "x")
        if spec.kind is InstrumentKind.COUNTER:
            meter.create_counter(spec.otel_name, unit=spec.unit).add(1, attrs)
        elif spec.kind is InstrumentKind.GAUGE:
            meter.create_gauge(spec.otel_name, unit=spec.unit).set(1, attrs)
        else:
            meter.create_histogram(spec.otel_name, unit=spec.unit).record(0.5, attrs)
    types = family_types(generate_latest(registry).decode())
    provider.shutdown()
    assert {m.prometheus_name: m.prometheus_type for m in METRICS}.items() <= types.items()


def test_buckets_resolve_sub_millisecond_to_beyond_ten_seconds() -> None:
    assert list(DURATION_BUCKETS) == sorted(set(DURATION_BUCKETS))
    assert DURATION_BUCKETS[0] < 0.0001 and DURATION_BUCKETS[-1] >= 10
    # The guide's p99 > 1 s alert needs a bucket boundary at exactly 1 s.
    assert 1.0 in DURATION_BUCKETS


def test_every_metric_has_a_description_and_a_ucum_or_annotation_unit() -> None:
    for spec in METRICS:
        assert spec.description
        assert spec.unit == "s" or re.fullmatch(r"\{[a-z_]+\}", spec.unit), spec
        assert "." in spec.otel_name


def test_histograms_name_their_native_series_apart_from_the_classic_ones() -> None:
    # Prometheus 3 stores an OTLP exponential histogram as one native series under the plain name;
    # series_names stays what the classic exposition shows (the Metrics Reference lists those).
    for spec in METRICS:
        if spec.kind is InstrumentKind.HISTOGRAM:
            assert spec.native_series_name == spec.prometheus_name
            assert spec.native_series_name not in spec.series_names
            assert spec.series_names == tuple(f"{spec.prometheus_name}_{s}" for s in ("bucket", "count", "sum"))
        else:
            assert spec.native_series_name is None
            assert spec.series_names == (spec.prometheus_name,)
