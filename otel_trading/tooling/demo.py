"""``otel-trading demo``: a simulated trading bot that moves every metric in the guide.

Market-data ticks and order events flow over an EventBus; orders go through one CircuitBreaker per
simulated venue. One venue fails in bursts, so its breaker trips, goes half-open and recovers. A
risk handler occasionally raises, so handler errors show too. Metrics are served by the embedded
Prometheus exporter on :8000 unless OTEL_METRICS_EXPORTER picks another backend. The demo prints
the metrics URL and the ``otel-trading top`` command that watches it, and, when stdout is a
terminal, a status line (breaker states, events/s) every few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import random
import signal
import sys
import time
import urllib.parse
from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource

from otel_trading.circuit_breaker import CircuitBreaker, CircuitOpenError
from otel_trading.event_bus import EventBus
from otel_trading.exporting import DEFAULT_METRICS_ADDR, DEFAULT_METRICS_PORT, configure_metrics

__all__ = ["add_subcommand", "run_demo"]

_logger = logging.getLogger("otel_trading.demo")


@dataclass(frozen=True)
class MarketTick:
    symbol: str
    price: float


@dataclass(frozen=True)
class OrderPlaced:
    order_id: int
    venue: str
    symbol: str
    quantity: float


@dataclass(frozen=True)
class OrderFilled:
    order_id: int
    venue: str
    price: float


class VenueDown(ConnectionError):
    """The simulated exchange did not answer."""


class SimulatedVenue:
    """An exchange API stub; ``burst_period`` > 0 makes it fail for part of every period."""

    def __init__(self, name: str, rng: random.Random, burst_period: float = 0.0, burst_length: float = 0.0):
        self.name = name
        self._rng = rng
        self._burst_period = burst_period
        self._burst_length = burst_length
        self._t0 = time.monotonic()

    def failing(self) -> bool:
        if self._burst_period <= 0:
            return False
        return (time.monotonic() - self._t0) % self._burst_period < self._burst_length

    async def submit(self, order: OrderPlaced, price: float) -> OrderFilled:
        await asyncio.sleep(self._rng.uniform(0.0005, 0.02))
        if self.failing():
            raise VenueDown(f"{self.name} timed out")
        return OrderFilled(order.order_id, self.name, price)


#: The simulated venues, one breaker each (``--force-open`` takes these names).
VENUE_NAMES = ("venue-alpha", "venue-beta", "venue-flaky")


class DemoBot:
    def __init__(self, args: argparse.Namespace) -> None:
        self.rng = random.Random(args.seed)
        self.tick_rate = args.tick_rate
        self.bus = EventBus(name="main", max_queue_size=50_000)
        self.venues = {
            "venue-alpha": SimulatedVenue("venue-alpha", self.rng),
            "venue-beta": SimulatedVenue("venue-beta", self.rng),
            "venue-flaky": SimulatedVenue("venue-flaky", self.rng, burst_period=20.0, burst_length=6.0),
        }
        forced = set(args.force_open or ())
        unknown = sorted(forced - set(self.venues))
        if unknown:
            raise ValueError(
                f"force_open: no breaker named {', '.join(map(repr, unknown))}; the demo's breakers are "
                f"{', '.join(VENUE_NAMES)}"
            )
        self.breakers = {
            name: CircuitBreaker(
                name=name,
                failure_threshold=3,
                recovery_timeout=3600.0 if name in forced else 2.0,
            )
            for name in self.venues
        }
        for name in forced:
            self.breakers[name].open()
        self.order_ids = 0
        self.prices = {"BTC-USD": 60_000.0, "ETH-USD": 3_000.0}
        # Events handled (for the status line), and its period: only when a person watches stdout.
        self.handled = 0
        self.status_every = STATUS_EVERY if sys.stdout.isatty() else 0.0

    async def on_tick(self, tick: MarketTick) -> None:
        self.handled += 1
        self.prices[tick.symbol] = tick.price
        if self.rng.random() < 0.05:
            self.order_ids += 1
            venue = self.rng.choice(["venue-flaky", "venue-alpha", "venue-beta", "venue-flaky"])
            await self.bus.publish(OrderPlaced(self.order_ids, venue, tick.symbol, 0.1))

    def risk_check(self, tick: MarketTick) -> None:
        if tick.price <= 0 or self.rng.random() < 0.002:
            raise ValueError(f"risk check rejected tick {tick}")

    async def on_order(self, order: OrderPlaced) -> None:
        self.handled += 1
        # Route to the chosen venue; fall back to the others while its breaker is open.
        for venue in [order.venue, *(v for v in self.venues if v != order.venue)]:
            try:
                fill = await self.breakers[venue].call_async(
                    self.venues[venue].submit, order, self.prices[order.symbol]
                )
            except CircuitOpenError:
                continue
            except VenueDown:
                continue
            await self.bus.publish(fill)
            return

    def on_fill(self, fill: OrderFilled) -> None:
        self.handled += 1
        _logger.debug("filled %s", fill)

    def status_line(self, events_per_s: float) -> str:
        """Breaker states and events/s, for a person watching the terminal."""
        states = ", ".join(f"{name} {breaker.state.name}" for name, breaker in self.breakers.items())
        return f"otel-trading demo: {time.strftime('%H:%M:%S')} breakers: {states} | {events_per_s:,.0f} events/s"

    async def report_status(self, stop: asyncio.Event) -> None:
        """Print a status line every ``status_every`` seconds until ``stop``."""
        last, handled = time.monotonic(), self.handled
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.status_every)
            if stop.is_set():
                return
            now = time.monotonic()
            print(self.status_line((self.handled - handled) / (now - last)), flush=True)
            last, handled = now, self.handled

    async def feed(self, stop: asyncio.Event) -> None:
        interval = 1.0 / self.tick_rate
        while not stop.is_set():
            for symbol, price in list(self.prices.items()):
                await self.bus.publish(MarketTick(symbol, max(0.01, price * (1 + self.rng.gauss(0, 0.0005)))))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def run(self, duration: float) -> None:
        self.bus.subscribe(MarketTick, self.on_tick)
        self.bus.subscribe(MarketTick, self.risk_check)
        self.bus.subscribe(OrderPlaced, self.on_order)
        self.bus.subscribe(OrderFilled, self.on_fill)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if duration > 0:
            loop.call_later(duration, stop.set)
        async with self.bus:
            status = asyncio.create_task(self.report_status(stop)) if self.status_every > 0 else None
            await self.feed(stop)
            if status is not None:
                await status


#: Seconds between two status lines (printed only when stdout is a terminal).
STATUS_EVERY = 5.0


def top_command(url: str) -> str:
    """The ``otel-trading top`` command line that watches ``url`` (a wildcard bind address becomes loopback)."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname in ("0.0.0.0", "::"):
        loopback = "127.0.0.1" if parts.hostname == "0.0.0.0" else "[::1]"
        url = urllib.parse.urlunsplit(parts._replace(netloc=f"{loopback}:{parts.port}"))
    # The executable as it was invoked (e.g. .venv/bin/otel-trading), so the line can be pasted as is.
    program = sys.argv[0] if os.path.basename(sys.argv[0]) == "otel-trading" else "otel-trading"
    return f"{program} top --url {url}"


#: The demo's ``service.name`` unless OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES name one: on the
#: push paths it becomes the ``job`` label (instead of ``unknown_service:python3``).
DEMO_SERVICE_NAME = "otel-trading-demo"


def demo_resource() -> Resource:
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    return Resource.create({} if named else {"service.name": DEMO_SERVICE_NAME})


def run_demo(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        handle = configure_metrics(
            default_exporters="prometheus",
            prometheus_port=args.port,
            prometheus_addr=args.addr,
            resource=demo_resource(),
        )
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise OSError(
            exc.errno, f"{exc.strerror}: pick another port with --port N, or --port 0 for a free one"
        ) from None
    if handle.server is not None:
        print(f"otel-trading demo: metrics at {handle.server.url}", flush=True)
        print(f"otel-trading demo: watch it live (q quits): {top_command(handle.server.url)}", flush=True)
    elif handle.exporters == ("none",):
        print("otel-trading demo: metrics off (OTEL_METRICS_EXPORTER=none)", flush=True)
    else:
        print(f"otel-trading demo: exporting via {','.join(handle.exporters)}", flush=True)
    bot = DemoBot(args)
    try:
        asyncio.run(bot.run(args.duration))
    except KeyboardInterrupt:
        pass
    finally:
        handle.shutdown()
    print("otel-trading demo: stopped", flush=True)
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("demo", help="run the simulated trading bot with metrics on")
    p.add_argument("--port", type=int, default=None, help=f"metrics port (default {DEFAULT_METRICS_PORT})")
    p.add_argument("--addr", default=None, help=f"metrics bind address (default {DEFAULT_METRICS_ADDR})")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 runs until Ctrl-C")
    p.add_argument("--tick-rate", type=float, default=50.0, help="tick batches per second")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--force-open",
        action="append",
        choices=VENUE_NAMES,
        metavar="BREAKER",
        help=f"hold this breaker OPEN (alerting drills); one of {', '.join(VENUE_NAMES)}; repeatable",
    )
    p.set_defaults(func=run_demo)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(argparse.Namespace(port=None, addr=None, duration=0.0, tick_rate=50.0, seed=7, force_open=None)))
