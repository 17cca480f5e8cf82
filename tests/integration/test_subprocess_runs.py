"""Whole-process behaviour: batched values exported at interpreter exit, and the benchmark suite runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Any

import pytest

from otel_trading.settings import OTEL_TRADING_DISABLED_METRICS

from ..realprocs import REPO

_EXIT_PROVIDER = """
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
reader = PeriodicExportingMetricReader(
    ConsoleMetricExporter(out=sys.stdout, formatter=lambda d: d.to_json(indent=None) + "\\n"),
    export_interval_millis=3_600_000,
)
provider = MeterProvider(metric_readers=[reader])
"""
_EXIT_BATCHING = "from otel_trading.batching import BatchedMetrics\n"
_EXIT_RECORD = """
batch = BatchedMetrics(provider)
fills = batch.wrap(provider.get_meter("exit-test").create_counter("exit.fills"))
for _ in range(1234):
    fills.add(1)
# No flush, no shutdown: the interpreter just exits.
"""


# atexit handlers run last-in first-out: the orders exercise both flush paths (the provider's final
# collection through the hook, and batching's own atexit flush before it), the last one with every
# otel-trading metric disabled (no otel-trading callback left to carry the hook).
@pytest.mark.parametrize(
    "setup, disabled",
    [
        (_EXIT_BATCHING + _EXIT_PROVIDER, ""),
        (_EXIT_PROVIDER + _EXIT_BATCHING, ""),
        (_EXIT_BATCHING + _EXIT_PROVIDER, "circuit_breaker,event_bus,otel_trading"),
    ],
    ids=["batching-imported-first", "provider-created-first", "all-otel-trading-metrics-disabled"],
)
def test_batched_values_are_exported_at_interpreter_exit(setup: str, disabled: str) -> None:
    script = "import sys\n" + setup + _EXIT_RECORD
    env = {**os.environ, OTEL_TRADING_DISABLED_METRICS: disabled}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    values = [
        p["value"]
        for line in proc.stdout.splitlines()
        for rm in json.loads(line)["resource_metrics"]
        for sm in rm["scope_metrics"]
        for m in sm["metrics"]
        if m["name"] == "exit.fills"
        for p in m["data"]["data_points"]
    ]
    assert values and values[-1] == 1234


# -- the benchmark cannot rot ------------------------------------------------------------------------


def test_bench_quick_mode_runs_and_writes_json_with_every_section(tmp_path: Any) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--repeat", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads(out.read_text())
    sections = {"meta", "bus", "breaker", "exactness", "scrape", "memory", "sampling", "batching", "targets"}
    assert sections <= set(results)
    assert results["targets"]["3_exact_counts"]["met"] and results["targets"]["4_otel_data"]["met"]
    for ratio in (results["bus"]["ratio_on_vs_off"], results["breaker"]["ratio_on_vs_pybreaker"]):
        assert math.isfinite(ratio) and ratio > 0
    assert results["scrape"]["payload_bytes"] > 0 and results["scrape"]["sample_lines"] > 0
    assert "Targets" in proc.stdout
