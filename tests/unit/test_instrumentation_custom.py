"""The bot's own breaker and event-bus classes, named by configuration.

Each test writes a small "bot module" under a fresh name in ``tmp_path``, so whether it is
imported before or after ``instrument()`` is under the test's control.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import logging
import sys
import textwrap
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from otel_trading.exporting import ConfigurationError
from otel_trading.instrumentation import TradingInstrumentor
from otel_trading.instrumentation.config import load_config, parse_config
from otel_trading.instrumentation.custom import resolve
from otel_trading.metric_contract import METRICS_BY_KEY

from ..conftest import Metrics

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}

GUARD_SOURCE = """
import enum


class State(enum.Enum):
    CLOSED = "c"
    OPEN = "o"
    HALF_OPEN = "h"


class GuardOpen(Exception):
    pass


class BadOrder(Exception):
    pass


class Guard:
    def __init__(self, name, threshold=2):
        self.name = name
        self.threshold = threshold
        self.state = State.CLOSED
        self.failures = 0

    def call(self, fn, *args):
        if self.state is State.OPEN:
            raise GuardOpen(self.name)
        try:
            result = fn(*args)
        except BadOrder:
            raise
        except Exception:
            self._failed()
            raise
        self._succeeded()
        return result

    def call_logged(self, fn, *args):
        return self.call(fn, *args)

    async def call_async(self, fn, *args):
        if self.state is State.OPEN:
            raise GuardOpen(self.name)
        try:
            result = await fn(*args)
        except Exception:
            self._failed()
            raise
        self._succeeded()
        return result

    def probe(self):
        self.state = State.HALF_OPEN

    def _failed(self):
        self.failures += 1
        if self.state is State.HALF_OPEN or self.failures >= self.threshold:
            self.state = State.OPEN

    def _succeeded(self):
        self.failures = 0
        self.state = State.CLOSED


class VenueGuard(Guard):
    pass
"""

BUS_SOURCE = """
import asyncio


class InlineBus:
    def __init__(self, name="inline"):
        self.name = name
        self.handlers = {}

    def on(self, topic, handler):
        self.handlers.setdefault(topic, []).append(handler)

    def off(self, topic, handler):
        self.handlers[topic].remove(handler)

    def emit(self, topic, payload=None):
        for handler in self.handlers.get(topic, []):
            handler(payload)


class QueueBus:
    def __init__(self):
        self.queue = asyncio.Queue()
        self.handlers = {}

    def subscribe(self, event_type, handler):
        self.handlers.setdefault(event_type, []).append(handler)

    async def publish(self, event):
        self.publish_nowait(event)

    def publish_nowait(self, event):
        self.queue.put_nowait(event)

    async def deliver(self, event):
        for handler in self.handlers.get(type(event), []):
            await handler(event)

    async def pump(self):
        while not self.queue.empty():
            event = self.queue.get_nowait()
            try:
                await self.deliver(event)
            except Exception:
                pass


class Tick:
    pass
"""


def guard_entry(module: str, cls: str = "Guard", **extra: Any) -> dict[str, Any]:
    return {
        "class": f"{module}:{cls}",
        "call": ["call", "call_async", "call_logged"],
        "state": "state",
        "states": {"closed": "CLOSED", "open": "OPEN", "half_open": "HALF_OPEN"},
        "rejected_exceptions": [f"{module}:GuardOpen"],
        "excluded_exceptions": [f"{module}:BadOrder"],
        **extra,
    }


def inline_bus_entry(module: str, **extra: Any) -> dict[str, Any]:
    return {
        "class": f"{module}:InlineBus",
        "publish": "emit",
        "dispatch": "emit",
        "subscribe": "on",
        "unsubscribe": "off",
        **extra,
    }


def queue_bus_entry(module: str, **extra: Any) -> dict[str, Any]:
    return {
        "class": f"{module}:QueueBus",
        "publish": ["publish", "publish_nowait"],
        "dispatch": "deliver",
        "subscribe": "subscribe",
        "queue_size": "queue.qsize",
        "name": "label",
        **extra,
    }


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Writes a module under a fresh name (not imported); returns the name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def write(source: str) -> str:
        name = f"botmod_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture
def guard_module(
    write_module: Callable[[str], str], instrumentor: TradingInstrumentor, metrics: Metrics
) -> types.ModuleType:
    """A Guard module, instrumented *before* the bot imports it (the opentelemetry-instrument order)."""
    name = write_module(GUARD_SOURCE)
    instrumentor.instrument(meter_provider=metrics.provider, config={"breakers": [guard_entry(name)]})
    return importlib.import_module(name)


@pytest.fixture
def bus_module(write_module: Callable[[str], str], instrumentor: TradingInstrumentor, metrics: Metrics) -> Any:
    name = write_module(BUS_SOURCE)
    config = {"event_buses": [inline_bus_entry(name), queue_bus_entry(name)]}
    instrumentor.instrument(meter_provider=metrics.provider, config=config)
    return importlib.import_module(name)


def boom() -> None:
    raise ConnectionError("venue down")


def problems_of(config: Any) -> list[str]:
    with pytest.raises(ConfigurationError) as info:
        parse_config(config, "cfg")
    return info.value.problems


# -- configuration ------------------------------------------------------------------------------------


def test_every_problem_is_reported_at_once_naming_its_entry() -> None:
    problems = problems_of(
        {
            "breakers": [{"class": "venues:Guard", "call": "call", "state": "state", "states": {"closed": 0}}],
            "event_buses": [{"class": "bus:Bus"}],
        }
    )
    assert problems == [
        "cfg breakers[0] (venues:Guard): 'states' must give the value(s) of the 'open' state",
        "cfg event_buses[0] (bus:Bus): 'publish' is required (a method name or a list of method names)",
    ]


def test_unknown_keys_are_rejected_with_the_allowed_ones() -> None:
    problems = problems_of({"breaker": [], "event_buses": [{"class": "b:B", "publish": "p", "topic": 1}]})
    assert problems[0].startswith("cfg: unknown key 'breaker' (allowed: breakers, event_buses)")
    assert problems[1].startswith("cfg event_buses[0] (b:B): unknown key 'topic' (allowed: class, dispatch")


def test_breaker_needs_a_call_method_and_a_state_attribute() -> None:
    problems = problems_of({"breakers": [{"class": "v:G"}]})
    assert any("'call' is required" in p for p in problems)
    assert any("'state' (the attribute holding the breaker's state) is required" in p for p in problems)


def test_a_state_value_given_for_two_states_is_rejected() -> None:
    entry = {"class": "v:G", "call": "call", "state": "s", "states": {"closed": [0, 1], "open": 1}}
    assert problems_of({"breakers": [entry]}) == [
        "cfg breakers[0] (v:G): state value 1 is given for more than one state"
    ]


@pytest.mark.parametrize("ref", ["venues.Guard", "venues:", "ven ues:Guard", "a:b:c", 42])
def test_class_must_be_module_colon_name(ref: Any) -> None:
    problems = problems_of({"breakers": [{"class": ref, "call": "c", "state": "s", "states": {}}]})
    assert any("'class' " in p and "module" in p for p in problems)


def test_a_method_may_not_have_two_roles_except_publish_and_dispatch() -> None:
    ok = parse_config({"event_buses": [{"class": "b:B", "publish": "emit", "dispatch": "emit"}]}, "cfg")
    assert ok.event_buses[0].publish == ok.event_buses[0].dispatch == ("emit",)
    assert problems_of({"event_buses": [{"class": "b:B", "publish": "emit", "subscribe": "emit"}]}) == [
        "cfg event_buses[0] (b:B): method 'emit' cannot be both 'publish' and 'subscribe'"
    ]


def test_the_same_class_configured_twice_is_rejected() -> None:
    bus = {"class": "b:B", "publish": "p"}
    problems = problems_of({"event_buses": [bus, bus]})
    assert problems == ["cfg event_buses[1] (b:B): class b:B is already configured by cfg event_buses[0] (b:B)"]


def test_inline_json_in_the_environment_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRADING_INSTRUMENT", json.dumps({"event_buses": [{"class": "b:B", "publish": "p"}]}))
    config = load_config()
    assert config.source == "OTEL_TRADING_INSTRUMENT"
    assert config.event_buses[0].cls.qualname == "B"


def test_invalid_json_in_the_environment_variable_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRADING_INSTRUMENT", "{not json")
    with pytest.raises(ConfigurationError, match="OTEL_TRADING_INSTRUMENT: invalid JSON"):
        load_config()


def test_toml_file_named_by_the_environment_variable_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "instrument.toml"
    path.write_text('[[event_buses]]\nclass = "b:B"\npublish = "p"\n')
    monkeypatch.setenv("OTEL_TRADING_INSTRUMENT", str(path))
    assert load_config().event_buses[0].publish == ("p",)


def test_pyproject_named_by_the_environment_variable_uses_its_tool_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(
        '[project]\nname = "bot"\n\n[[tool.otel-trading.instrument.event_buses]]\nclass = "b:B"\npublish = "p"\n'
    )
    monkeypatch.setenv("OTEL_TRADING_INSTRUMENT", str(path))
    config = load_config()
    assert config.source.endswith("[tool.otel-trading.instrument]")
    assert config.event_buses[0].cls.module == "b"


def test_pyproject_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[[tool.otel-trading.instrument.event_buses]]\nclass = "b:B"\npublish = "p"\n'
    )
    assert load_config(cwd=tmp_path).event_buses[0].cls.module == "b"


def test_pyproject_without_the_section_means_no_custom_classes(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "bot"\n')
    assert load_config(cwd=tmp_path).empty


def test_errors_in_the_pyproject_section_name_the_file_and_section(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[[tool.otel-trading.instrument.event_buses]]\nclass = "b:B"\n')
    with pytest.raises(ConfigurationError) as info:
        load_config(cwd=tmp_path)
    assert info.value.problems == [
        f"{tmp_path / 'pyproject.toml'} [tool.otel-trading.instrument] event_buses[0] (b:B): "
        "'publish' is required (a method name or a list of method names)"
    ]


def test_missing_configuration_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRADING_INSTRUMENT", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigurationError, match="cannot read the configuration file"):
        load_config()


def test_invalid_configuration_fails_instrument_and_patches_nothing(
    metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    with pytest.raises(ConfigurationError, match=r"breakers\[0\]"):
        instrumentor.instrument(meter_provider=metrics.provider, config={"breakers": [{"class": "v:G"}]})
    assert not instrumentor.is_instrumented_by_opentelemetry
    assert instrumentor.patched == []


def test_lenient_parsing_keeps_the_valid_entries_and_lists_the_problems() -> None:
    config = parse_config(
        {
            "event_buses": [
                {"class": "b:Good", "publish": "p"},
                {"class": "b:Bad", "publsh": "p"},
                {"class": "b:Good", "publish": "q"},
            ],
            "breakers": "not a list",
        },
        "cfg",
        strict=False,
    )
    assert [b.cls.qualname for b in config.event_buses] == ["Good"]
    assert config.problems == (
        "cfg: 'breakers' must be a list of tables ([[...breakers]] in TOML), got str",
        "cfg event_buses[1] (b:Bad): unknown key 'publsh' (allowed: class, dispatch, event_arg, exclude_events, "
        "name, publish, queue_size, subscribe, subscribers, unsubscribe)",
        "cfg event_buses[1] (b:Bad): 'publish' is required (a method name or a list of method names)",
        "cfg event_buses[2] (b:Good): class b:Good is already configured by cfg event_buses[0] (b:Good)",
    )


def test_lenient_loading_of_invalid_json_gives_no_entry_and_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRADING_INSTRUMENT", "{not json")
    config = load_config(strict=False)
    assert config.empty
    assert config.problems[0].startswith("OTEL_TRADING_INSTRUMENT: invalid JSON")


def _pybreaker_successes(metrics: Metrics) -> float | None:
    import pybreaker

    pybreaker.CircuitBreaker(name="binance").call(lambda: None)
    return metrics.value(N["breaker_successes"], name="binance")


@pytest.fixture
def instrument_from_environment(
    metrics: Metrics,
    instrumentor: TradingInstrumentor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> Callable[[dict[str, Any]], list[logging.LogRecord]]:
    """Instrument with ``config`` in ``OTEL_TRADING_INSTRUMENT``; returns the warnings and errors logged."""

    def instrument(config: dict[str, Any]) -> list[logging.LogRecord]:
        monkeypatch.setenv("OTEL_TRADING_INSTRUMENT", json.dumps(config))
        with caplog.at_level(logging.WARNING, logger="otel_trading"):
            instrumentor.instrument(meter_provider=metrics.provider)
        assert instrumentor.is_instrumented_by_opentelemetry
        return [r for r in caplog.records if r.levelno >= logging.WARNING]

    return instrument


def test_one_bad_entry_in_the_environment_leaves_only_that_entry_uninstrumented(
    write_module: Callable[[str], str],
    metrics: Metrics,
    instrument_from_environment: Callable[[dict[str, Any]], list[logging.LogRecord]],
) -> None:
    # Old design: one misspelt key ("publsh") raised out of instrument(), so nothing was instrumented,
    # pybreaker included, and opentelemetry-instrument printed the problems twice in two tracebacks.
    name = write_module(BUS_SOURCE)
    bad = {**inline_bus_entry(name), "publsh": "emit"}
    del bad["publish"]
    [record] = instrument_from_environment({"event_buses": [bad, queue_bus_entry(name)]})
    module = importlib.import_module(name)
    assert _pybreaker_successes(metrics) == 1
    bus = module.QueueBus()
    bus.label = "q"
    bus.publish_nowait(module.Tick())
    assert metrics.value(N["bus_published"], event_type="Tick") == 1
    inline = module.InlineBus()
    inline.emit("quote")
    assert metrics.value(N["bus_published"], event_type="quote") is None
    assert record.levelno == logging.ERROR and record.exc_info is None
    message = record.getMessage()
    assert message.count("unknown key 'publsh'") == 1
    assert "everything else is instrumented" in message
    assert f"event_buses[0] ({name}:InlineBus)" in message


def test_an_entry_whose_imported_module_lacks_the_class_is_left_out_and_reported(
    write_module: Callable[[str], str],
    metrics: Metrics,
    instrument_from_environment: Callable[[dict[str, Any]], list[logging.LogRecord]],
) -> None:
    module = importlib.import_module(write_module(GUARD_SOURCE))
    name = module.__name__
    [record] = instrument_from_environment({"breakers": [guard_entry(name, "Gaurd"), guard_entry(name, "VenueGuard")]})
    guard = module.VenueGuard("kraken")
    guard.call(lambda: None)
    assert metrics.value(N["breaker_successes"], name="kraken") == 1
    assert record.levelno == logging.ERROR
    assert f"module {name!r} has no class 'Gaurd'" in record.getMessage()


def test_a_module_that_cannot_be_found_is_named_with_a_suggestion(
    write_module: Callable[[str], str],
    metrics: Metrics,
    monkeypatch: pytest.MonkeyPatch,
    instrument_from_environment: Callable[[dict[str, Any]], list[logging.LogRecord]],
) -> None:
    # Old design: a misspelt module printed nothing at all; its classes were simply never patched.
    name = write_module(BUS_SOURCE)
    monkeypatch.chdir(Path(importlib.util.find_spec(name).origin).parent)  # type: ignore[arg-type,union-attr]
    misspelt = name + "s"
    [record] = instrument_from_environment({"event_buses": [inline_bus_entry(misspelt), queue_bus_entry(name)]})
    assert record.levelno == logging.WARNING
    assert f"module {misspelt!r} cannot be found" in record.getMessage()
    assert f"did you mean {name!r}?" in record.getMessage()
    assert _pybreaker_successes(metrics) == 1


def test_an_explicit_config_is_still_strict(
    metrics: Metrics, instrumentor: TradingInstrumentor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRADING_INSTRUMENT", "{not json")  # config= wins over the variable
    with pytest.raises(ConfigurationError, match=r"unknown key 'publsh'"):
        instrumentor.instrument(
            meter_provider=metrics.provider, config={"event_buses": [{"class": "b:B", "publsh": "p"}]}
        )
    assert not instrumentor.is_instrumented_by_opentelemetry


# -- resolution against the imported module ----------------------------------------------------------


def test_missing_method_of_an_imported_module_fails_at_instrument_naming_entry_and_method(
    write_module: Callable[[str], str], metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    name = write_module(GUARD_SOURCE)
    importlib.import_module(name)
    entry = guard_entry(name, call=["call", "execute"])
    with pytest.raises(ConfigurationError) as info:
        instrumentor.instrument(meter_provider=metrics.provider, config={"breakers": [entry]})
    assert info.value.problems == [
        f"instrument(config=...) breakers[0] ({name}:Guard): class {name}:Guard has no method 'execute' "
        "(configured as 'call')"
    ]
    assert instrumentor.patched == []


def test_missing_class_in_a_module_imported_later_is_logged_and_the_import_succeeds(
    write_module: Callable[[str], str],
    metrics: Metrics,
    instrumentor: TradingInstrumentor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = write_module(GUARD_SOURCE)
    instrumentor.instrument(meter_provider=metrics.provider, config={"breakers": [guard_entry(name, "Gaurd")]})
    with caplog.at_level(logging.ERROR, logger="otel_trading.instrumentation"):
        module = importlib.import_module(name)
    assert module.Guard("x").call(lambda: 1) == 1
    assert f"module {name!r} has no class 'Gaurd'" in caplog.text


def test_class_of_the_script_itself_explains_how_to_instrument_it() -> None:
    spec = parse_config({"event_buses": [{"class": "__main__:Bus", "publish": "p"}]}, "cfg").event_buses[0]
    _, problems = resolve(spec, types.ModuleType("__main__"))
    assert "move the class into a module, or call instrument_bot() after the class definition" in problems[0]


# -- custom breakers -------------------------------------------------------------------------------------


def test_custom_breaker_outcomes_are_counted_by_its_name(guard_module: Any, metrics: Metrics) -> None:
    guard = guard_module.Guard("venue", threshold=2)
    guard.call(lambda: None)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            guard.call(boom)
    with pytest.raises(guard_module.GuardOpen):
        guard.call(lambda: None)
    assert metrics.value(N["breaker_successes"], name="venue") == 1
    assert metrics.value(N["breaker_failures"], name="venue") == 2
    assert metrics.value(N["breaker_rejected"], name="venue") == 1


def test_custom_breaker_excluded_exception_counts_as_success(guard_module: Any, metrics: Metrics) -> None:
    guard = guard_module.Guard("venue")

    def rejected_order() -> None:
        raise guard_module.BadOrder("insufficient funds")

    with pytest.raises(guard_module.BadOrder):
        guard.call(rejected_order)
    assert metrics.value(N["breaker_successes"], name="venue") == 1
    assert metrics.value(N["breaker_failures"], name="venue") == 0


async def test_custom_async_call_method_is_counted_and_timed(guard_module: Any, metrics: Metrics) -> None:
    guard = guard_module.Guard("venue")

    async def slow() -> str:
        await asyncio.sleep(0.02)
        return "filled"

    assert await guard.call_async(slow) == "filled"
    point = metrics.histogram(N["breaker_latency"], name="venue")
    assert metrics.value(N["breaker_successes"], name="venue") == 1
    assert point is not None and point.count == 1 and point.sum >= 0.02


def test_custom_breaker_state_is_mapped_and_its_changes_are_transitions(guard_module: Any, metrics: Metrics) -> None:
    guard = guard_module.Guard("venue", threshold=1)
    assert metrics.value(N["breaker_state"], name="venue") == 0
    with pytest.raises(ConnectionError):
        guard.call(boom)
    assert metrics.value(N["breaker_state"], name="venue") == 1
    guard.probe()  # changed outside any call: seen at the next collection
    assert metrics.value(N["breaker_state"], name="venue") == 2
    guard.call(lambda: None)
    transitions = {
        (p.attributes["from_state"], p.attributes["to_state"]): p.value
        for p in metrics.points(N["breaker_transitions"])
    }
    assert transitions == {("closed", "open"): 1, ("open", "half_open"): 1, ("half_open", "closed"): 1}


def test_call_method_delegating_to_another_call_method_counts_once(guard_module: Any, metrics: Metrics) -> None:
    guard = guard_module.Guard("venue")
    assert guard.call_logged(lambda: 7) == 7
    assert metrics.value(N["breaker_successes"], name="venue") == 1


def test_configured_class_covers_its_subclasses(guard_module: Any, metrics: Metrics) -> None:
    guard_module.VenueGuard("sub").call(lambda: None)
    assert metrics.value(N["breaker_successes"], name="sub") == 1


def test_custom_breaker_returns_and_raises_exactly_as_without_instrumentation(
    write_module: Callable[[str], str], metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    module = importlib.import_module(write_module(GUARD_SOURCE))

    def run() -> list[Any]:
        guard = module.Guard("venue", threshold=2)
        trace: list[Any] = []
        for fn in (lambda: 1, boom, lambda: 2, boom, boom, lambda: 3):
            try:
                trace.append(("returned", guard.call(fn)))
            except Exception as exc:
                trace.append(("raised", type(exc).__name__, str(exc)))
            trace.append((guard.state.name, guard.failures, sorted(vars(guard))))
        return trace

    plain = run()
    entry = guard_entry(module.__name__)
    instrumentor.instrument(meter_provider=metrics.provider, config={"breakers": [entry]})
    assert run() == plain
    assert metrics.value(N["breaker_successes"], name="venue") == 2
    assert metrics.value(N["breaker_failures"], name="venue") == 3
    assert metrics.value(N["breaker_rejected"], name="venue") == 1


# -- custom event buses -------------------------------------------------------------------------------


def test_inline_bus_counts_published_processed_and_handler_errors(bus_module: Any, metrics: Metrics) -> None:
    bus = bus_module.InlineBus()
    calls: list[Any] = []
    bus.on("tick", calls.append)
    bus.emit("tick", 1)
    bus.on("fill", lambda p: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        bus.emit("fill", 2)
    assert calls == [1]
    assert metrics.value(N["bus_published"], event_type="tick") == 1
    assert metrics.value(N["bus_processed"], event_type="tick") == 1
    assert metrics.value(N["bus_handler_errors"], event_type="fill") == 1
    assert metrics.value(N["bus_processed"], event_type="fill") == 1


def test_subscribe_and_unsubscribe_calls_are_counted_as_subscribers(bus_module: Any, metrics: Metrics) -> None:
    bus = bus_module.InlineBus()

    def handler(payload: Any) -> None:
        pass

    bus.on("tick", handler)
    bus.on("tick", print)
    bus.off("tick", handler)
    assert metrics.value(N["bus_subscribers"], event_type="tick") == 1


def test_subscribers_mapping_is_read_at_collection_when_configured(
    write_module: Callable[[str], str], metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    name = write_module(BUS_SOURCE)
    entry = inline_bus_entry(name, subscribers="handlers")
    instrumentor.instrument(meter_provider=metrics.provider, config={"event_buses": [entry]})
    bus = importlib.import_module(name).InlineBus()
    bus.on("tick", print)
    bus.handlers["tick"].append(print)  # behind the bus's back: still seen
    assert metrics.value(N["bus_subscribers"], event_type="tick") == 2


async def test_queue_size_is_reported_under_the_bus_name(bus_module: Any, metrics: Metrics) -> None:
    bus = bus_module.QueueBus()
    bus.label = "orders"
    for _ in range(3):
        await bus.publish(bus_module.Tick())
    assert metrics.value(N["bus_queue_size"], bus="orders") == 3


async def test_publish_calling_another_publish_method_counts_the_event_once(bus_module: Any, metrics: Metrics) -> None:
    bus = bus_module.QueueBus()
    await bus.publish(bus_module.Tick())
    bus.publish_nowait(bus_module.Tick())
    assert metrics.value(N["bus_published"], event_type="Tick") == 2


async def test_dispatch_times_each_event_by_its_type(bus_module: Any, metrics: Metrics) -> None:
    bus = bus_module.QueueBus()

    async def slow(event: Any) -> None:
        await asyncio.sleep(0.02)

    bus.subscribe(bus_module.Tick, slow)
    await bus.publish(bus_module.Tick())
    await bus.pump()
    point = metrics.histogram(N["bus_processing_duration"], event_type="Tick")
    assert metrics.value(N["bus_subscribers"], event_type="Tick") == 1
    assert point is not None and point.count == 1 and point.sum >= 0.02


# -- uninstrument -------------------------------------------------------------------------------------


def test_uninstrument_restores_custom_classes_exactly_including_inherited_methods(
    write_module: Callable[[str], str], metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    module = importlib.import_module(write_module(GUARD_SOURCE))
    before = {cls: dict(vars(cls)) for cls in (module.Guard, module.VenueGuard)}
    entry = guard_entry(module.__name__, "VenueGuard")  # call methods are inherited from Guard
    instrumentor.instrument(meter_provider=metrics.provider, config={"breakers": [entry]})
    assert "call" in vars(module.VenueGuard)
    instrumentor.uninstrument()
    for cls, attrs in before.items():
        assert vars(cls).keys() == attrs.keys()
        assert all(vars(cls)[k] is v for k, v in attrs.items())


def test_import_hook_leaves_the_modules_loader_and_sys_meta_path_as_they_were(
    write_module: Callable[[str], str], metrics: Metrics, instrumentor: TradingInstrumentor
) -> None:
    meta_path = list(sys.meta_path)
    name = write_module(GUARD_SOURCE)
    instrumentor.instrument(meter_provider=metrics.provider, config={"breakers": [guard_entry(name)]})
    module = importlib.import_module(name)
    assert isinstance(module.__loader__, importlib.machinery.SourceFileLoader)
    assert module.__spec__.loader is module.__loader__
    instrumentor.uninstrument()
    assert sys.meta_path == meta_path
