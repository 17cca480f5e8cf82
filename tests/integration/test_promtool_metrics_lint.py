"""`promtool check metrics` on a real /metrics: the only findings are the ones the contract documents."""

from __future__ import annotations

import asyncio
import re
import subprocess
from dataclasses import dataclass

import pytest

from otel_trading import CircuitBreaker, EventBus, start_metrics_server
from otel_trading.metric_contract import METRICS

from ..realprocs import PROMETHEUS_VERSIONS, promtool_binary, scrape


@dataclass
class Tick:
    price: float


async def _traffic(bus: EventBus) -> None:
    async with bus:
        bus.subscribe(Tick, lambda e: None)
        for i in range(5):
            await bus.publish(Tick(float(i)))


@pytest.mark.parametrize("version", PROMETHEUS_VERSIONS, ids=lambda v: f"promtool{v}")
def test_promtool_warns_only_about_names_the_guide_fixes(version: str) -> None:
    with start_metrics_server(port=0, addr="127.0.0.1", set_global=False) as server:
        breaker = CircuitBreaker("binance", meter_provider=server.meter_provider)
        breaker.call(lambda: None)
        bus = EventBus(meter_provider=server.meter_provider)  # kept alive: its gauges report while it lives
        asyncio.run(_traffic(bus))
        text = scrape(server.url)
    assert "event_bus_subscribers_gauge{" in text
    proc = subprocess.run(
        [promtool_binary(version), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    output = proc.stdout + proc.stderr
    warned = set(re.findall(r"^(\w+) ", output, re.M)) - {"target_info"}
    documented = {spec.prometheus_name for spec in METRICS if spec.lint_note}
    assert documented and warned == documented, output
