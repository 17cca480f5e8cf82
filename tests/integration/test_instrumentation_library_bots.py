"""The example bots of ``examples/{circuitbreaker,purgatory,pyee}_bot``, auto-instrumented in real subprocesses.

None of the bots knows about OpenTelemetry. Each runs under ``opentelemetry-instrument`` with the
SDK's Prometheus exporter (no otel-trading configuration at all), and under ``instrument_bot()``
called by a launcher before the bot's script runs; ``/metrics`` is scraped over HTTP and must hold
exactly the values the bot's deterministic scenario implies. The bot's own ``SUMMARY`` must equal
that of a plain ``python bot.py --once``; with the library's entry point named in
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` nothing of it is exported.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from ..realprocs import REPO
from .example_bots import BotRun, opentelemetry_instrument, run_instrumented, run_plain

BOTS = ("circuitbreaker", "purgatory", "pyee")
# The third runs the pure-Python hot paths (as a build without a C compiler would), the others the
# compiled ones the test command builds.
PURE_PYTHON = "opentelemetry-instrument, pure Python"
LAUNCHERS = ("opentelemetry-instrument", "instrument_bot", PURE_PYTHON)
TRADING_PREFIXES = ("circuit_breaker_", "event_bus_")
# The instrument_bot() launcher: the bot's script runs unchanged, as `python bot.py` would run it.
INSTRUMENT_BOT = (
    "import runpy, sys; from otel_trading.instrumentation import instrument_bot; instrument_bot(); "
    "sys.argv = ['bot.py']; runpy.run_path('bot.py', run_name='__main__')"
)


def _bot_dir(bot: str) -> Path:
    return REPO / "examples" / f"{bot}_bot"


def run_bot(bot: str, launcher: str, workdir: Path, disabled: str = "") -> BotRun:
    if launcher in ("opentelemetry-instrument", PURE_PYTHON):
        argv = [str(opentelemetry_instrument()), sys.executable, "bot.py"]
    else:
        argv = [sys.executable, "-c", INSTRUMENT_BOT]
    env = {
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": disabled,
        "OTEL_TRADING_INSTRUMENT": "",
        "OTEL_TRADING_PURE_PYTHON": "true" if launcher == PURE_PYTHON else "false",
    }
    return run_instrumented(f"{bot}-bot-{launcher}", _bot_dir(bot), argv, workdir, env)


@pytest.fixture(scope="module")
def plain() -> dict[str, dict[str, Any]]:
    return {bot: run_plain(_bot_dir(bot)) for bot in BOTS}


class _LazyRuns(dict[tuple[str, str], BotRun]):
    """(bot, launcher) -> its run, made on first use."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        super().__init__()
        self._factory = factory

    def __missing__(self, key: tuple[str, str]) -> BotRun:
        bot, launcher = key
        run = run_bot(bot, launcher, self._factory.mktemp(f"{bot}-{launcher}"))
        self[key] = run
        return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], BotRun]:
    """Every bot under every launcher, run once for the module (lazily, as tests ask)."""
    return _LazyRuns(tmp_path_factory)


def _assert_breakers(run: BotRun, expected: dict[str, tuple[int, int, int, int, int, float]]) -> None:
    """name: successes, failures, rejected, state, latency count, least latency sum (s)."""
    for name, (ok, failed, rejected, state, count, least) in expected.items():
        assert run.value("circuit_breaker_successes_total", name=name) == ok, name
        assert run.value("circuit_breaker_failures_total", name=name) == failed, name
        assert run.value("circuit_breaker_rejected_total", name=name) == rejected, name
        assert run.value("circuit_breaker_state", name=name) == state, name
        assert run.value("circuit_breaker_latency_seconds_count", name=name) == count, name
        total = run.value("circuit_breaker_latency_seconds_sum", name=name)
        assert total is not None and total >= least, (name, total)


def _transitions(run: BotRun) -> dict[tuple[str, str, str], float]:
    return {
        (dict(labels)["name"], dict(labels)["from_state"], dict(labels)["to_state"]): v
        for (sample, labels), v in run.samples.items()
        if sample == "circuit_breaker_transitions_total"
    }


def _no_internal_errors(run: BotRun) -> None:
    assert "otel-trading instrumentation:" not in run.log, run.log[-3000:]
    assert "Traceback" not in run.log.replace("KeyError: 'bug in the recorder'", ""), run.log[-3000:]


# -- circuitbreaker ------------------------------------------------------------------------------------


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_circuitbreaker_bot_exports_exact_breaker_metrics(runs: dict[tuple[str, str], BotRun], launcher: str) -> None:
    run = runs["circuitbreaker", launcher]
    expected = {
        # name: successes, failures, rejected, state, latency count, least latency sum (s)
        "binance": (20, 0, 0, 0, 20, 20 * 0.002),  # order 5's InsufficientFunds is excluded: a success
        "kraken": (0, 3, 17, 1, 3, 3 * 0.002),
        "candles": (3, 2, 0, 0, 5, 2 * 2 * 0.002 + 3 * 3 * 0.002),  # generator calls, timed to their end
    }
    _assert_breakers(run, expected)
    transitions = _transitions(run)
    assert transitions == {("kraken", "closed", "open"): 1}
    _no_internal_errors(run)


# -- purgatory ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_purgatory_bot_exports_exact_breaker_metrics(runs: dict[tuple[str, str], BotRun], launcher: str) -> None:
    run = runs["purgatory", launcher]
    expected = {
        "binance": (20, 0, 0, 0, 20, 20 * 0.002),  # excluded InsufficientFunds: a success
        "kraken": (0, 3, 17, 1, 3, 3 * 0.002),  # OpenedState rejections
        "okx": (3, 1, 1, 0, 4, 4 * 0.002),  # sync, context manager, recovered through half-open
    }
    _assert_breakers(run, expected)
    transitions = _transitions(run)
    assert transitions == {
        ("kraken", "closed", "open"): 1,
        ("okx", "closed", "open"): 1,
        ("okx", "open", "half_open"): 1,
        ("okx", "half_open", "closed"): 1,
    }
    _no_internal_errors(run)


# -- pyee -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_pyee_bot_exports_exact_event_bus_metrics(runs: dict[tuple[str, str], BotRun], launcher: str) -> None:
    run = runs["pyee", launcher]
    expected = {
        # event: published, processed, handler errors, least duration sum (s)
        "tick": (20, 20, 1, 20 * 0.005),  # processed when its async recorder task has ended too
        "fill": (20, 20, 0, 0.0),
        "order": (20, 20, 0, 20 * 0.001),
    }
    for event, (published, processed, errors, least) in expected.items():
        assert run.value("event_bus_events_published_total", event_type=event) == published, event
        assert run.value("event_bus_events_processed_total", event_type=event) == processed, event
        assert run.value("event_bus_handler_errors_total", event_type=event) == errors, event
        assert run.value("event_bus_processing_duration_seconds_count", event_type=event) == processed, event
        total = run.value("event_bus_processing_duration_seconds_sum", event_type=event)
        assert total is not None and total >= least, (event, total)
    assert run.value("event_bus_subscribers_gauge", event_type="tick") == 2
    assert run.value("event_bus_subscribers_gauge", event_type="fill") == 1
    assert run.value("event_bus_subscribers_gauge", event_type="order") == 1
    # pyee's own events are not the app's; only the asyncio emitter has a queue (its pending tasks).
    assert run.label_values("event_bus_", "event_type") == {"tick", "fill", "order"}
    assert run.label_values("event_bus_queue_size", "bus") == {"AsyncIOEventEmitter"}
    assert run.value("event_bus_queue_size", bus="AsyncIOEventEmitter") == 0
    assert "KeyError: 'bug in the recorder'" not in run.log  # the bot's error handler took it
    _no_internal_errors(run)


# -- every bot -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("bot", BOTS)
def test_instrumented_bot_behaves_exactly_as_the_plain_bot(
    runs: dict[tuple[str, str], BotRun], plain: dict[str, dict[str, Any]], bot: str, launcher: str
) -> None:
    assert runs[bot, launcher].summary == plain[bot]


@pytest.mark.parametrize("bot", BOTS)
def test_the_librarys_entry_point_name_switches_it_off(
    tmp_path: Path, plain: dict[str, dict[str, Any]], bot: str
) -> None:
    run = run_bot(bot, "opentelemetry-instrument", tmp_path, disabled=f"otel_trading_{bot}")
    names = {name for name, _ in run.samples}
    assert any(name.startswith("python_gc_") for name in names)  # the endpoint itself works
    assert sorted(n for n in names if n.startswith(TRADING_PREFIXES)) == []
    assert run.summary == plain[bot]


@pytest.mark.parametrize("bot", BOTS)
def test_example_readme_gives_the_command_this_test_runs(bot: str) -> None:
    readme = (_bot_dir(bot) / "README.md").read_text()
    assert "OTEL_METRICS_EXPORTER=prometheus opentelemetry-instrument python bot.py" in readme
    assert f"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=otel_trading_{bot}" in readme
    source = (_bot_dir(bot) / "bot.py").read_text()
    assert "import opentelemetry" not in source and "otel_trading" not in source
