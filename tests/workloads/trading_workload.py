"""A deterministic bot workload for the export-path tests, configured only by the environment.

The backend is whatever OTEL_METRICS_EXPORTER says (``configure_metrics()``), so the same script
proves "swap by configuration". Durations come from a stepping fake clock patched into
otel-trading's own modules, so histogram buckets are identical on every run and every path.

Modes: ``--batch`` runs a fixed workload, prints ``WORKLOAD DONE``, then keeps serving until
SIGTERM; ``--steady`` keeps working (one breaker call and one event per tick) until SIGTERM and
prints its own totals on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import signal
import sys
from dataclasses import dataclass

import otel_trading.circuit_breaker as cb_module
import otel_trading.event_bus as bus_module
from otel_trading import CircuitBreaker, CircuitOpenError, EventBus, configure_metrics

# Durations cycle through values well inside distinct buckets: 0.3 ms, 4 ms, 70 ms, 1.7 s.
_STEPS = itertools.cycle([0.0003, 0.004, 0.07, 1.7])


class _SteppingClock:
    """perf_counter stand-in: every second reading is the previous one plus the next step."""

    def __init__(self) -> None:
        self.now = 0.0
        self.odd = False

    def __call__(self) -> float:
        if self.odd:
            self.now += next(_STEPS)
        self.odd = not self.odd
        return self.now


@dataclass
class MarketTick:
    price: float


@dataclass
class OrderFilled:
    qty: float


class VenueDown(Exception):
    pass


def _fail() -> None:
    raise VenueDown()


async def batch(stop: asyncio.Event) -> None:
    clock = _SteppingClock()
    cb_module.perf_counter = clock  # type: ignore[attr-defined]
    bus_module.perf_counter = clock  # type: ignore[attr-defined]
    good = CircuitBreaker(name="venue-good", failure_threshold=3)
    flaky = CircuitBreaker(name="venue-flaky", failure_threshold=3, recovery_timeout=3600)
    for _ in range(12):
        good.call(lambda: None)
    for _ in range(3):
        with contextlib.suppress(VenueDown):
            flaky.call(_fail)
    for _ in range(5):
        with contextlib.suppress(CircuitOpenError):
            flaky.call(lambda: None)
    bus = EventBus(name="main")
    bus.subscribe(MarketTick, lambda e: None)
    bus.subscribe(MarketTick, lambda e: None)
    bus.subscribe(OrderFilled, lambda e: None)

    def broken(_: OrderFilled) -> None:
        raise ValueError("handler bug")

    bus.subscribe(OrderFilled, broken)
    async with bus:
        for i in range(40):
            await bus.publish(MarketTick(float(i)))
        for i in range(6):
            await bus.publish(OrderFilled(float(i)))
    print("WORKLOAD DONE", flush=True)
    await stop.wait()
    # Keep the components alive until the end: their gauges report live objects only.
    print(json.dumps({"good": int(good.state), "flaky": int(flaky.state), "bus": bus.name}), flush=True)


async def steady(stop: asyncio.Event) -> None:
    breaker = CircuitBreaker(name="venue-steady")
    calls = 0
    async with EventBus(name="steady") as bus:
        bus.subscribe(MarketTick, lambda e: None)
        while not stop.is_set():
            breaker.call(lambda: None)
            await bus.publish(MarketTick(1.0))
            calls += 1
            await asyncio.sleep(0.005)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"calls": calls, "events": calls, "max_rss_kib": rss_kib}), flush=True)


async def main(mode: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await (batch(stop) if mode == "batch" else steady(stop))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["batch", "steady"])
    args = parser.parse_args()
    handle = configure_metrics(
        prometheus_port=int(os.environ.get("WORKLOAD_METRICS_PORT", "0")), prometheus_addr="127.0.0.1"
    )
    if handle.server is not None:
        print(f"METRICS {handle.server.url}", flush=True)
    try:
        asyncio.run(main(args.mode))
    finally:
        handle.shutdown()
    sys.exit(0)
