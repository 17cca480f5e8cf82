"""What the custom-class configuration learnt from circuitbreaker, purgatory and pyee.

Each of those libraries, described by ``OTEL_TRADING_INSTRUMENT`` as a user would (their built-in
targets switched off), showed a gap: guarded blocks spanning ``__enter__``/``__exit__``, per-call
wrapper objects, generator call methods, and a library's own event names. These tests configure
them with the keys added for each (``enter``/``exit``, ``per_call_objects``, generator methods,
``exclude_events``) and check the numbers. What the configuration still cannot express is listed
in the README ("Instrument an existing bot").
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import Iterator
from typing import Any

import purgatory
import pyee
import pytest
from circuitbreaker import CircuitBreaker, CircuitBreakerMonitor
from purgatory.domain.model import OpenedState

from otel_trading.exporting import ConfigurationError
from otel_trading.instrumentation import TradingInstrumentor
from otel_trading.instrumentation.config import parse_config
from otel_trading.metric_contract import METRICS_BY_KEY

from ..conftest import Metrics
from ..conftest import breaker_counts as counts

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}
PURGATORY_STATES = {"closed": "closed", "open": "opened", "half_open": "half-opened"}
_unique = itertools.count()


class VenueDown(ConnectionError):
    pass


@pytest.fixture(autouse=True)
def _builtin_targets_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # The libraries are described by configuration here, as for a library otel-trading does not know.
    monkeypatch.setenv(
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
        "otel_trading_circuitbreaker,otel_trading_purgatory,otel_trading_pyee",
    )
    CircuitBreakerMonitor.circuit_breakers = {}
    gc.collect()  # wrapper objects of earlier tests would be bound by instrument(), as they should


def purgatory_entry(cls: str, enter: str, exit_: str) -> dict[str, Any]:
    return {
        "class": cls,
        "enter": enter,
        "exit": exit_,
        "per_call_objects": True,
        "name": "context.name",
        "state": "context.state",
        "states": PURGATORY_STATES,
        "rejected_exceptions": ["purgatory.domain.model:OpenedState"],
    }


PURGATORY_CONFIG = {
    "breakers": [
        purgatory_entry("purgatory.service._sync.circuitbreaker:SyncCircuitBreaker", "__enter__", "__exit__"),
        purgatory_entry("purgatory.service._async.circuitbreaker:AsyncCircuitBreaker", "__aenter__", "__aexit__"),
    ]
}


# -- enter/exit and per-call wrapper objects (purgatory) ------------------------------------------------


def test_a_block_spanning_enter_and_exit_on_per_call_objects_is_counted_and_timed(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    instrumentor.instrument(meter_provider=metrics.provider, config=PURGATORY_CONFIG)
    breakers = purgatory.SyncCircuitBreakerFactory(default_threshold=2, default_ttl=600)
    kraken = f"kraken-{next(_unique)}"  # circuits of other tests may still be alive

    @breakers(kraken)
    def order(fail: bool) -> str:
        time.sleep(0.01)
        if fail:
            raise VenueDown("down")
        return "filled"

    assert order(False) == "filled"
    for _ in range(2):
        with pytest.raises(VenueDown):
            order(True)
    for _ in range(2):  # raised by __enter__: a rejection, not timed
        with pytest.raises(OpenedState):
            order(False)
    assert counts(metrics, kraken) == (1, 2, 2)
    latency = metrics.histogram(N["breaker_latency"], name=kraken)
    assert latency is not None and latency.count == 3 and latency.sum >= 0.03
    assert metrics.value(N["breaker_state"], name=kraken) == 1
    transitions = {
        (p.attributes["from_state"], p.attributes["to_state"])
        for p in metrics.points(N["breaker_transitions"])
        if p.attributes["name"] == kraken
    }
    assert transitions == {("closed", "open")}
    # One series per name, whatever number of wrapper objects purgatory made.
    assert [p.attributes["name"] for p in metrics.points(N["breaker_successes"])].count(kraken) == 1


async def test_async_blocks_spanning_aenter_and_aexit_are_counted_and_timed(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    instrumentor.instrument(meter_provider=metrics.provider, config=PURGATORY_CONFIG)
    breakers = purgatory.AsyncCircuitBreakerFactory(default_threshold=5)
    binance = f"binance-{next(_unique)}"

    @breakers(binance)
    async def order(fail: bool) -> str:
        await asyncio.sleep(0.02)
        if fail:
            raise VenueDown("down")
        return "filled"

    assert await asyncio.gather(order(False), order(False)) == ["filled", "filled"]
    with pytest.raises(VenueDown):
        await order(True)
    assert counts(metrics, binance) == (2, 1, 0)
    latency = metrics.histogram(N["breaker_latency"], name=binance)
    assert latency is not None and latency.count == 3 and latency.sum >= 0.06  # the whole awaited block


# -- generator call methods (circuitbreaker) -------------------------------------------------------------


def test_a_generator_call_method_is_timed_to_its_end_and_fails_when_it_raises(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    config = {
        "breakers": [
            {
                "class": "circuitbreaker:CircuitBreaker",
                "call": ["call", "call_generator"],
                "state": "state",
                "states": {"closed": "closed", "open": "open", "half_open": "half_open"},
                "rejected_exceptions": ["circuitbreaker:CircuitBreakerError"],
            }
        ]
    }
    instrumentor.instrument(meter_provider=metrics.provider, config=config)
    breaker = CircuitBreaker(failure_threshold=10, name="feed")

    @breaker
    def candles(fail: bool) -> Iterator[int]:
        yield 1
        time.sleep(0.01)
        if fail:
            raise VenueDown("feed dropped")
        yield 2

    for _ in range(3):
        with pytest.raises(VenueDown):
            list(candles(True))
    assert list(candles(False)) == [1, 2]
    assert counts(metrics, "feed") == (1, 3, 0)  # was (4, 0, 0) with near-zero latency
    latency = metrics.histogram(N["breaker_latency"], name="feed")
    assert latency is not None and latency.count == 4 and latency.sum >= 0.04


# -- a library's own events (pyee) ----------------------------------------------------------------------------


def pyee_config(**extra: Any) -> dict[str, Any]:
    return {
        "event_buses": [
            {
                "class": "pyee.base:EventEmitter",
                "publish": "emit",
                "dispatch": "_call_handlers",
                "subscribers": "_events",
                **extra,
            }
        ]
    }


def test_excluded_event_names_are_never_counted(metrics: Metrics, instrumentor: TradingInstrumentor) -> None:
    config = pyee_config(exclude_events=["new_listener", "error"])
    instrumentor.instrument(meter_provider=metrics.provider, config=config)
    ee = pyee.EventEmitter()
    ee.on("error", lambda exc: None)  # emits new_listener
    ee.on("tick", lambda: None)
    ee.emit("tick")
    ee.emit("error", VenueDown("reported"))
    labels = {p.attributes.get("event_type") for name in N.values() for p in metrics.points(name)} - {None}
    assert labels == {"tick"}
    assert metrics.value(N["bus_published"], event_type="tick") == 1
    assert metrics.value(N["bus_processed"], event_type="tick") == 1
    assert metrics.value(N["bus_subscribers"], event_type="tick") == 1


def test_without_exclude_events_pyees_own_events_look_like_the_apps(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    instrumentor.instrument(meter_provider=metrics.provider, config=pyee_config())
    ee = pyee.EventEmitter()
    ee.on("tick", lambda: None)
    assert metrics.value(N["bus_published"], event_type="new_listener") == 1


# -- validation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"enter": "__enter__"}, "'exit' is required"),
        ({"call": "call", "enter": "call", "exit": "__exit__"}, "method 'call' cannot be both 'call' and 'enter'"),
        ({"call": "call", "per_call_objects": "yes"}, "'per_call_objects' must be true or false"),
    ],
)
def test_new_breaker_keys_are_validated(entry: dict[str, Any], problem: str) -> None:
    base = {"class": "m:C", "state": "state", "states": {"closed": "c", "open": "o"}}
    with pytest.raises(ConfigurationError) as raised:
        parse_config({"breakers": [{**base, **entry}]}, "cfg")
    assert problem in str(raised.value)


def test_exclude_events_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="'exclude_events' must be a list of event names"):
        parse_config({"event_buses": [{"class": "m:B", "publish": "emit", "exclude_events": [1]}]}, "cfg")
    config = parse_config({"event_buses": [{"class": "m:B", "publish": "emit", "exclude_events": "error"}]}, "cfg")
    assert config.event_buses[0].exclude_events == frozenset({"error"})
